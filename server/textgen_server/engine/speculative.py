"""The scheduler's side of speculative decoding (no torch): how many candidates a decode step may carry, and
how a step's generations map back onto its items.

A sequence's candidates (Sequence.speculative_ids) come from the shard with its latest token. The decode item
is then [last token, c1..ck] with num_speculative = k; the shard answers 1 + j Generations for it, j being the
number of candidates the model agreed with (see shard.proto). Candidates never cause a preemption: they are
trimmed to what fits the free KV blocks, and to the tokens the request may still generate (the token sampled
after the last candidate counts too, so at most max_new_tokens - generated - 1 candidates).
"""
from __future__ import annotations

from textgen_server.engine.block_manager import BlockManager
from textgen_server.engine.sequence import Sequence
from textgen_server.protocol import Generation, StepItem


def fit_candidates(seq: Sequence, block_manager: BlockManager) -> list[int]:
    """The candidates `seq` carries in its next decode step: its proposals, trimmed to its remaining tokens
    and to the KV slots the free blocks can give (the block for the last token itself comes first)."""
    remaining = seq.max_new_tokens - seq.num_output_tokens - 1
    candidates = seq.speculative_ids[: max(0, remaining)]
    while candidates and not block_manager.can_append(seq, len(candidates)):
        candidates = candidates[:-1]
    return candidates


def group_generations(items: list[StepItem], generations: list[Generation]) -> list[list[Generation]]:
    """One list per item: empty for items that do not sample, else 1 + accepted candidates Generations.

    Raises ValueError when the shard's answer does not follow the contract (order, counts, accepted tokens).
    """
    groups: list[list[Generation]] = []
    index = 0
    for item in items:
        if not item.sample:
            groups.append([])
            continue
        group = _take_group(item, generations, index)
        if group is None:
            raise ValueError(_mismatch(items, generations))
        index += len(group)
        groups.append(group)
    if index != len(generations):
        raise ValueError(_mismatch(items, generations))
    return groups


def _take_group(item: StepItem, generations: list[Generation], index: int) -> list[Generation] | None:
    if index >= len(generations) or generations[index].request_id != item.request_id:
        return None
    end = index + 1
    while (end < len(generations) and end - index <= item.num_speculative
           and generations[end].request_id == item.request_id):
        end += 1
    group = generations[index:end]
    candidates = item.token_ids[len(item.token_ids) - item.num_speculative:] if item.num_speculative else []
    accepted = [generation.token.id for generation in group[:-1]]
    if accepted != candidates[: len(accepted)]:
        raise ValueError(
            f"request {item.request_id}: the shard accepted tokens {accepted} that are not a prefix of the"
            f" candidates {candidates}; the router and shard disagree on the step"
        )
    return group


def _mismatch(items: list[StepItem], generations: list[Generation]) -> str:
    received = [generation.request_id for generation in generations]
    expected = [item.request_id for item in items if item.sample]
    return (
        f"postprocess: the shard returned generations for requests {received}, expected {expected}"
        " (one per item with sample=True, plus accepted candidates of speculative items, in item order);"
        " the router and shard disagree on the step"
    )
