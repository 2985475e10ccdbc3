"""Grammar masks on the shard: one llguidance matcher per constrained sequence, applied to its logits row.

A matcher follows the tokens of its request's history (prompt excluded), consuming at each step those it has not
seen yet, so it stays right through chunked prefill, preemption (readmission replays the generated tokens) and
whatever token the router fed. Tokens the grammar forbids get -inf before every other processor (TGI's order);
when the grammar is complete only the end-of-sequence ids remain, so the sequence ends with EOS. Rows without a
grammar are never touched, so free requests sample exactly as in a batch without constrained ones.

Speculative decoding: the verify rows of one request ([last, c1..cK], shard/verify.py) share its GrammarState, in
order, row i's history ending with c1..ci. The first row catches the matcher up with the committed tokens; each
next row advances it through its candidate (while the grammar allows it) and is masked there; afterwards the
matcher is rolled back to the committed tokens, and the next step consumes whichever candidates were accepted.
A row behind a forbidden candidate keeps the mask before it: it can never be kept, since the row before it was
masked so that its sampled token differs from that candidate. Proposals are cut to the grammar's valid prefix
(`cut_candidates`), so on a well-formed step no candidate is refused here.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import llguidance
import llguidance.torch
import numpy as np
import torch

from textgen_server.grammar.compile import build_ll_tokenizer

TEMPLATES_KEPT = 256  # grammars whose freshly built matcher is kept for deep_copy (cheaper than a rebuild)


@dataclass
class GrammarState:
    """A sequence's matcher and how many of its generated tokens it has consumed."""

    matcher: llguidance.LLMatcher
    num_consumed: int = 0


class GrammarRow(Protocol):
    """What the mask needs of a sampler row (sampler.RequestState)."""

    grammar: GrammarState | None
    history: list[int]
    num_prompt_tokens: int


class GrammarFactory:
    """Builds matchers for one model's tokenizer, loaded on first use (most servers never see a grammar)."""

    def __init__(self, model_path: str | Path, vocab_size: int, eos_token_ids: list[int]) -> None:
        self.model_path, self.vocab_size, self.eos_token_ids = Path(model_path), vocab_size, eos_token_ids
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._templates: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def new_state(self, grammar_text: str) -> GrammarState:
        """A fresh matcher at the start of `grammar_text` (checked by the router, so errors here are bugs that
        show as a matcher in error state, which then allows only EOS)."""
        with self._lock:
            template = self._templates.get(grammar_text)
            if template is None:
                template = llguidance.LLMatcher(self._require_tokenizer(), grammar_text, log_level=0)
                self._templates[grammar_text] = template
                while len(self._templates) > TEMPLATES_KEPT:
                    self._templates.popitem(last=False)
            else:
                self._templates.move_to_end(grammar_text)
            return GrammarState(template.deep_copy())

    def _require_tokenizer(self) -> llguidance.LLTokenizer:
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # here: a shard that never sees a grammar never loads it

            from textgen_server.grammar.compile import hf_tokenizer_json
            hf_tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
            self._tokenizer = build_ll_tokenizer(hf_tokenizer_json(hf_tokenizer), self.vocab_size,
                                                 self.eos_token_ids)
        return self._tokenizer


def apply_grammar_masks(scores: torch.Tensor, rows: list[GrammarRow]) -> torch.Tensor:
    """scores [S, V] with -inf on every token a row's grammar forbids now (rows without one unchanged)."""
    constrained = [i for i, row in enumerate(rows) if row.grammar is not None]
    if not constrained:
        return scores
    vocab_size = scores.shape[1]
    bitmask = llguidance.torch.allocate_token_bitmask(len(constrained), vocab_size)  # [G, ceil(V / 32)] int32
    committed: dict[int, tuple[GrammarState, int]] = {}  # per state: its matcher's committed token count
    # One row after the other on this thread (~0.1 ms each with a 32k vocabulary): llguidance's parallel executor
    # measured slower on 2 cores (4.8 vs 3.6 ms for 32 rows), and its worker threads compete with torch's.
    for j, i in enumerate(constrained):
        state = rows[i].grammar
        assert state is not None
        if id(state) not in committed:  # a request's first row: its committed tokens
            _catch_up(state, rows[i])
            committed[id(state)] = (state, state.num_consumed)
        else:  # a later verify row of the same request: one candidate further
            _advance_speculative(state, rows[i])
        llguidance.torch.fill_next_token_bitmask(state.matcher, bitmask, j)
    for state, num_committed in committed.values():
        if state.num_consumed > num_committed:
            state.matcher.rollback(state.num_consumed - num_committed)
            state.num_consumed = num_committed
    allowed = unpack_bitmask(bitmask, vocab_size).to(scores.device)  # [G, V] bool
    if len(constrained) == len(rows):  # every row constrained: one masked_fill, no gather/scatter
        return scores.masked_fill(~allowed, float("-inf"))
    index = torch.tensor(constrained, dtype=torch.long, device=scores.device)
    scores = scores.clone()
    scores[index] = scores[index].masked_fill(~allowed, float("-inf"))
    return scores


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[G, W] int32 bit words (token t allowed iff bit t % 32 of word t // 32) -> [G, vocab_size] bool.

    numpy's unpackbits on the little-endian bytes is one single-threaded pass (torch's bit ops were several
    thread-pool dispatches per step)."""
    as_bytes = bitmask.numpy().view(np.uint8)  # [G, 4W], little-endian words: byte-wise bit order is token order
    return torch.from_numpy(np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :vocab_size].astype(bool))


def _catch_up(state: GrammarState, row: GrammarRow) -> None:
    generated = row.history[row.num_prompt_tokens:]
    pending = generated[state.num_consumed:]
    if pending:
        state.matcher.consume_tokens(pending)  # a forbidden token puts the matcher in error: EOS only from then
        state.num_consumed = len(generated)


def _advance_speculative(state: GrammarState, row: GrammarRow) -> None:
    """Consume the row's candidates beyond what the matcher has seen, up to the first one the grammar refuses."""
    pending = row.history[row.num_prompt_tokens + state.num_consumed:]
    if pending and not state.matcher.is_error():
        state.num_consumed += state.matcher.try_consume_tokens(pending)


def cut_candidates(state: GrammarState, row: GrammarRow, next_token: int, candidates: list[int]) -> list[int]:
    """The longest prefix of `candidates` the grammar allows after the row's history and `next_token` (the token
    just sampled, not yet in the history); the matcher is left as it was."""
    if not candidates or state.matcher.is_error():
        return []
    pending = [*row.history[row.num_prompt_tokens + state.num_consumed:], next_token]
    num_valid = state.matcher.validate_tokens(pending + candidates)
    return candidates[: max(0, num_valid - len(pending))]
