"""Prompt logprobs (TGI's decoder_input_details): log P(token | tokens before it) for every prompt token.

A prompt may arrive in several chunks, one per step. Within a chunk, position p's logits predict the token at
p + 1; the chunk's last row predicts the NEXT chunk's first token, which the shard only sees one step later, so
that row (its log-softmax, vocab-sized) is kept per request until then. Values are the raw model distribution
(log_softmax of the logits, no temperature or penalties), as TGI's.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from textgen_server.protocol import StepItem
from textgen_server.shard.errors import InvalidStepError


@dataclass
class PromptLogprobs:
    """What one request accumulated so far: values for prompt[1:next_pos] and the row predicting prompt[next_pos]."""

    values: list[float] = field(default_factory=list)
    next_pos: int = 0
    last_row: torch.Tensor | None = None


def accumulate(
    items: list[StepItem],
    hidden: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    pending: dict[int, PromptLogprobs],
) -> dict[int, list[float]]:
    """Adds the logprobs of every item with prefill_logprobs; returns the finished ones (sampling items).

    `hidden` is the flattened [T, hidden] output of the step, rows in item order. Finished requests are removed
    from `pending`; the others keep their last row for the next chunk.
    """
    finished: dict[int, list[float]] = {}
    offset = 0
    for item in items:
        num_tokens = len(item.token_ids)
        if item.prefill_logprobs:
            state = _state_for(item, pending)
            logprobs = torch.log_softmax(lm_head(hidden[offset : offset + num_tokens]).float(), dim=-1)
            _extend(state, item, logprobs)
            if item.sample:
                finished[item.request_id] = pending.pop(item.request_id).values
        offset += num_tokens
    return finished


def _state_for(item: StepItem, pending: dict[int, PromptLogprobs]) -> PromptLogprobs:
    if item.start_pos == 0:
        pending[item.request_id] = PromptLogprobs()
    state = pending.get(item.request_id)
    if state is None or state.next_pos != item.start_pos:
        expected = "none" if state is None else str(state.next_pos)
        raise InvalidStepError(
            f"request {item.request_id}: prefill_logprobs at start_pos {item.start_pos}, but this shard computed "
            f"the prompt logprobs up to position {expected}; every chunk of the prompt must ask for them from "
            "position 0 (the router must not use prefix-cache hits for such requests)"
        )
    return state


def _extend(state: PromptLogprobs, item: StepItem, logprobs: torch.Tensor) -> None:
    tokens = torch.tensor(item.token_ids, device=logprobs.device)
    if item.start_pos > 0:
        assert state.last_row is not None, "a state past position 0 always holds the previous chunk's last row"
        state.values.append(float(state.last_row[tokens[0]]))
    within = logprobs[:-1].gather(1, tokens[1:, None]).squeeze(1)
    state.values.extend(within.tolist())
    state.next_pos = item.start_pos + len(item.token_ids)
    state.last_row = None if item.sample else logprobs[-1].clone()
