"""The measured cost of a decode step by query tokens per row, timed at warmup for the adaptive rule.

Why: whether a candidate pays depends on what one more query token per row costs, and that is a property of the
device and the model, not a constant: on this CPU a float32 step with 4+ query tokens per row switches matmul
kernels (one 768x2048 projection 0.56-0.64 ms at 1-3 rows, 1.1 ms at 4-6), so 4 candidates cost ~1.5x a plain
step, while a GPU reading its weights once per step barely notices them. A few forwards at warmup (each batch
size x 1..K+1 query tokens per row, best of REPEATS interleaved rounds) give speculation/adaptive.py's StepCosts.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from textgen_server.models.attention_metadata import AttentionMetadata, build_attention_metadata
from textgen_server.models.kv_cache import PagedKVCache
from textgen_server.protocol import StepItem
from textgen_server.speculation.adaptive import StepCosts

BATCH_SIZES = (1, 8)  # batch 1 and a typical concurrent batch; larger batches use the batch-8 table
REPEATS = 5           # best of 5 rounds: the first call of a shape also pays one-off allocations
CONTEXT = 64          # tokens before the verified ones, a short prompt's worth of keys to attend to


def measure_step_costs(run_model: Callable[[AttentionMetadata, PagedKVCache], torch.Tensor], cache: PagedKVCache,
                       max_queries: int, device: torch.device) -> StepCosts:
    """Seconds per decode step for 1..max_queries query tokens per row, per batch size the cache can hold.
    The forwards write garbage keys into blocks nothing reads before a request rewrites them (warmup clears)."""
    by_batch: dict[int, tuple[float, ...]] = {}
    for batch_size in BATCH_SIZES:
        steps = [verify_items(batch_size, q, max_queries, cache.num_blocks, cache.block_size)
                 for q in range(1, max_queries + 1)]
        if any(items is None for items in steps):
            continue
        metadata = [build_attention_metadata(items, cache.block_size, device) for items in steps if items]
        best = [float("inf")] * max_queries
        # Rounds over all query counts, not repeats of one: a burst of load from other processes then hits every
        # count alike instead of inflating one, and the minimum over rounds keeps each count's quiet time.
        for _ in range(REPEATS):
            for index, step in enumerate(metadata):
                best[index] = min(best[index], _timed(run_model, step, cache, device))
        by_batch[batch_size] = monotone(best)
    return StepCosts(by_batch)


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


def monotone(costs: list[float]) -> tuple[float, ...]:
    """More query tokens never cost less: timer noise that says so is flattened to the cost before it."""
    out: list[float] = []
    for cost in costs:
        out.append(max(cost, out[-1]) if out else cost)
    return tuple(out)


def _timed(run_model: Callable[[AttentionMetadata, PagedKVCache], torch.Tensor], metadata: AttentionMetadata,
           cache: PagedKVCache, device: torch.device) -> float:
    with torch.inference_mode():
        started = time.perf_counter()
        run_model(metadata, cache)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started
