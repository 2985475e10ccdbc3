"""The measured cost of a decode step by query tokens per row, timed at warmup for the adaptive rule.

Why: whether a candidate pays depends on what one more query token per row costs, and that is a property of the
device and the model, not a constant: on this CPU a float32 step with 4+ query tokens per row switches matmul
kernels (one 768x2048 projection 0.56-0.64 ms at 1-3 rows, 1.1 ms at 4-6), so 4 candidates cost ~1.5x a plain
step, while a GPU reading its weights once per step barely notices them. A few forwards at warmup (each batch
size x 1..K+1 query tokens per row) give speculation/adaptive.py's StepCosts.

Robust to a loaded machine (the shard shares its CPUs): rounds over all query counts, so a burst of load hits
every count alike instead of inflating one; the minimum over rounds per count (its quietest time); more rounds
while those minima still contradict each other (more tokens measured cheaper by over 5%), within a time budget;
then an isotonic fit (pool adjacent violators: contradicting neighbours are averaged). A running maximum, as
before, let one inflated 1-token time flatten the whole table (every count as dear as 1 token), so the rule
proposed every candidate: measured 30.9 vs 39.3 tokens/s at batch 1.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from textgen_server.models.attention_metadata import AttentionMetadata, build_attention_metadata
from textgen_server.models.kv_cache import PagedKVCache
from textgen_server.protocol import StepItem
from textgen_server.speculation.adaptive import StepCosts

BATCH_SIZES = (1, 8)  # batch 1 and a typical concurrent batch; the rule reads costs by total tokens (adaptive.py)
ROUNDS = 5            # rounds always timed: the first call of a shape also pays one-off allocations
MAX_ROUNDS = 25       # more rounds while the minima contradict each other (estimate_costs), at most this many
EXTRA_SECONDS = 10.0  # ... and for at most this long per batch size: warmup must end on a loaded machine too
TOLERANCE = 0.05      # more tokens measured this much cheaper than fewer: noise, time more rounds
CONTEXT = 64          # tokens before the verified ones, a short prompt's worth of keys to attend to


def measure_step_costs(run_model: Callable[[AttentionMetadata, PagedKVCache], torch.Tensor], cache: PagedKVCache,
                       max_queries: int, device: torch.device, world_size: int = 1) -> StepCosts:
    """Seconds per decode step for 1..max_queries query tokens per row, per batch size the cache can hold.
    The forwards write garbage keys into blocks nothing reads before a request rewrites them (warmup clears).

    With several ranks (tensor parallel) the forwards are collective, so every rank times the same rounds (one
    more round when any rank wants one), and every rank ends with the same table, the slowest rank's time per
    shape (a step waits for its slowest rank): rank 0's candidates, the ones the router uses, are then what any
    rank would choose."""
    by_batch: dict[int, tuple[float, ...]] = {}
    for batch_size in BATCH_SIZES:
        steps = [verify_items(batch_size, q, max_queries, cache.num_blocks, cache.block_size)
                 for q in range(1, max_queries + 1)]
        if any(items is None for items in steps):
            continue
        metadata = [build_attention_metadata(items, cache.block_size, device) for items in steps if items]
        rounds = timed_rounds(lambda index: _timed(run_model, metadata[index], cache, device), len(metadata),
                              lambda more: _any_rank(more, world_size, device))
        by_batch[batch_size] = _max_over_ranks(estimate_costs(rounds), world_size, device)
    return StepCosts(by_batch)


def timed_rounds(time_step: Callable[[int], float], num_shapes: int, agree: Callable[[bool], bool],
                 clock: Callable[[], float] = time.perf_counter) -> list[list[float]]:
    """rounds[r][i]: time_step(i) in round r; ROUNDS rounds, then more while the minima contradict each other
    (consistent) and the budget lasts, as long as agree(wanting more) says so (every rank must time the same
    rounds). Odd rounds run the shapes in reverse, so a trend in the load favours no end of the table."""
    rounds: list[list[float]] = []
    started = clock()
    while len(rounds) < ROUNDS or agree(len(rounds) < MAX_ROUNDS and not consistent(rounds)
                                        and clock() - started < EXTRA_SECONDS):
        order = range(num_shapes) if len(rounds) % 2 == 0 else range(num_shapes - 1, -1, -1)
        timed = {index: time_step(index) for index in order}
        rounds.append([timed[index] for index in range(num_shapes)])
    return rounds


def _any_rank(flag: bool, world_size: int, device: torch.device) -> bool:
    if world_size == 1:
        return flag
    votes = torch.tensor([float(flag)], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())


def _max_over_ranks(costs: tuple[float, ...], world_size: int, device: torch.device) -> tuple[float, ...]:
    if world_size == 1:
        return costs
    values = torch.tensor(costs, dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return tuple(float(value) for value in values.tolist())


def consistent(rounds: list[list[float]]) -> bool:
    """Whether the per-count minima rise (within TOLERANCE) with the query count, as compute does."""
    best = [min(column) for column in zip(*rounds)]
    return all(later >= earlier * (1 - TOLERANCE) for earlier, later in zip(best, best[1:]))


def estimate_costs(rounds: list[list[float]]) -> tuple[float, ...]:
    """Per query count, its minimum over the rounds (rounds[r][q - 1] seconds), fitted to never fall."""
    return isotonic([min(column) for column in zip(*rounds)])


def verify_items(batch_size: int, num_queries: int, max_queries: int, num_blocks: int,
                 block_size: int) -> list[StepItem] | None:
    """Verify items of `num_queries` tokens after CONTEXT tokens, one block range per row; None if they don't fit."""
    blocks_per_row = -(-(CONTEXT + max_queries) // block_size)
    if batch_size * blocks_per_row > num_blocks:
        return None
    return [
        StepItem(row, [1] * num_queries, CONTEXT, list(range(row * blocks_per_row, (row + 1) * blocks_per_row)),
                 False, num_speculative=num_queries - 1)
        for row in range(batch_size)
    ]


def isotonic(costs: list[float]) -> tuple[float, ...]:
    """The closest non-decreasing sequence (least squares; pool adjacent violators): more query tokens never
    cost less, and where the timings say so they are averaged, not raised to the dearest."""
    blocks: list[list[float]] = []  # [sum, count] of pooled neighbours
    for cost in costs:
        blocks.append([cost, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return tuple(total / count for total, count in blocks for _ in range(int(count)))


def _timed(run_model: Callable[[AttentionMetadata, PagedKVCache], torch.Tensor], metadata: AttentionMetadata,
           cache: PagedKVCache, device: torch.device) -> float:
    with torch.inference_mode():
        started = time.perf_counter()
        run_model(metadata, cache)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started
