"""Speculative verification on the shard: one sampler row per position of a speculative item, then acceptance.

A decode item [t0, c1..cK] (num_speculative = K) has K + 1 logit rows. Row i is sampled by the full sampler as if
c1..ci had been generated: its RequestState's history ends with them, so penalties count them and the seeded
noise index is the request's (generated tokens + i). The request keeps the sampled token of row 0, and of each
next row while the previous row's token equals the candidate it was fed (c_{i}); the first mismatching row's
token is the last one kept. The kept tokens are therefore exactly what step-by-step decoding would have chosen,
greedy or seeded, with every logits processor.
"""
from __future__ import annotations

import dataclasses

from textgen_server.protocol import Generation, StepItem
from textgen_server.sampling import RequestState


def candidates_of(item: StepItem) -> list[int]:
    return item.token_ids[len(item.token_ids) - item.num_speculative:] if item.num_speculative else []


def expand_rows(items: list[StepItem], states: list[RequestState]) -> tuple[list[int], list[RequestState]]:
    """Per sampler row: the request id and the state to sample it with (items are the sampling items)."""
    request_ids: list[int] = []
    row_states: list[RequestState] = []
    for item, state in zip(items, states):
        candidates = candidates_of(item)
        for i in range(len(candidates) + 1):
            request_ids.append(item.request_id)
            row_states.append(state if i == 0 else dataclasses.replace(state, history=state.history + candidates[:i]))
    return request_ids, row_states


def accept(items: list[StepItem], row_generations: list[Generation]) -> tuple[list[list[Generation]], list[int]]:
    """Per sampling item, its kept Generations; and, per item, the row (index into row_generations) of the last
    kept position's input, whose hidden state a proposer reads."""
    kept: list[list[Generation]] = []
    last_rows: list[int] = []
    row = 0
    for item in items:
        candidates = candidates_of(item)
        num_accepted = 0
        while num_accepted < len(candidates) and row_generations[row + num_accepted].token.id == candidates[num_accepted]:
            num_accepted += 1
        kept.append(row_generations[row : row + num_accepted + 1])
        last_rows.append(row + num_accepted)
        row += len(candidates) + 1
    return kept, last_rows
