"""One generation request as the scheduler sees it: token ids, progress, and its KV block table.

Plain integers only (no torch): the router owns this bookkeeping and tells the shard, step by step, which
tokens to compute at which positions.
"""
from __future__ import annotations

import enum
import time
from collections.abc import Iterable

from textgen_server.protocol import SamplingParams


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life. A preempted sequence goes back to WAITING (it keeps its tokens)."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.StrEnum):
    """Why generation stopped; the values are TGI's `finish_reason` strings."""

    LENGTH = "length"                  # max_new_tokens reached (engine)
    EOS_TOKEN = "eos_token"            # an EOS id was generated (engine)
    STOP_SEQUENCE = "stop_sequence"    # the router found a stop sequence and aborted the request


class Sequence:
    """A request's tokens (prompt then generated), its KV block table and how much of it is computed.

    Invariants: `token_ids == prompt_token_ids + output_token_ids`; positions [0, num_computed_tokens) are in
    the KV cache; `block_ids` covers at least every computed position. The last token of a running sequence
    in decode is always uncomputed: it was just sampled, and the next step computes it.
    """

    def __init__(
        self,
        request_id: int,
        prompt_token_ids: Iterable[int],
        max_new_tokens: int,
        params: SamplingParams | None = None,
        eos_token_ids: Iterable[int] = (),
        arrival_time: float | None = None,
        want_prefill_logprobs: bool = False,
    ) -> None:
        self.request_id = request_id
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(self.token_ids)
        _validate(request_id, self.num_prompt_tokens, max_new_tokens)
        self.max_new_tokens = max_new_tokens
        self.params = params if params is not None else SamplingParams()
        # An empty set means "ignore EOS" (TGI's ignore_eos_token / benchmarks): stop on length only.
        self.eos_token_ids: frozenset[int] = frozenset(eos_token_ids)
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.status = SequenceStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.block_ids: list[int] = []
        self.num_computed_tokens = 0
        # Prefix-cache hit length at the latest admission (what the shard gets as prefix_token_ids).
        self.num_cached_tokens = 0
        # How many leading blocks are registered in (or matched from) the prefix cache.
        self.num_hashed_blocks = 0
        # True from (re)admission until the first item is built: that item carries params and the prefix.
        self.needs_params = False
        self.num_preemptions = 0
        # Prompt logprobs asked (decoder_input_details): computed during the prefill before the first token.
        self.want_prefill_logprobs = want_prefill_logprobs
        # Speculative decoding: candidate tokens for the next decode step (proposed by the shard with the latest
        # token). They are not in token_ids: the next step computes them after the last token and keeps those the
        # model agrees with.
        self.speculative_ids: list[int] = []

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def needs_prefill_logprobs(self) -> bool:
        """Whether its prompt must be computed with logprobs: asked for and no token generated yet.

        Such a prefill must start at position 0: a prefix-cache hit would skip positions whose logprobs were
        never computed. After the first token (which carries them) a recompute may use the cache again.
        """
        return self.want_prefill_logprobs and self.num_output_tokens == 0

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def finish_reason_after(self, token_id: int) -> FinishReason | None:
        """The reason to stop now that `token_id` was appended as the latest output token, if any."""
        if token_id in self.eos_token_ids:
            return FinishReason.EOS_TOKEN
        if self.num_output_tokens >= self.max_new_tokens:
            return FinishReason.LENGTH
        return None

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.request_id}, status={self.status.value}, tokens={self.num_tokens}"
            f" (prompt {self.num_prompt_tokens}), computed={self.num_computed_tokens},"
            f" blocks={len(self.block_ids)})"
        )


def _validate(request_id: int, num_prompt_tokens: int, max_new_tokens: int) -> None:
    if num_prompt_tokens == 0:
        raise ValueError(
            f"request {request_id}: the prompt has no tokens; at least one is needed to sample from"
            " (the router should reject empty inputs before scheduling)"
        )
    if max_new_tokens < 1:
        raise ValueError(f"request {request_id}: max_new_tokens must be >= 1, got {max_new_tokens}")
