"""Bucket-aware scheduling (SchedulerConfig.buckets): every step the scheduler builds pads to a warmed shape.

A randomized simulation without a model (plain ints): bursts of arrivals, long and short prompts, a KV cache small
enough to preempt (recompute prompts longer than --max-input-tokens), prefix-cache hits. Every step's prefill group
and decode group must pad (shard/static_layout.pad_step) to shapes in warmup_shapes, and every request must finish.
"""
from __future__ import annotations

import random

import pytest

from textgen_server.engine import BlockManager, Scheduler, SchedulerConfig, Sequence
from textgen_server.engine.buckets import BucketConfig, warmup_shapes
from textgen_server.protocol import Generation, Token
from textgen_server.shard.static_layout import pad_step

BUCKETS = BucketConfig(batch_bucket_size=4, prefill_batch_bucket_size=3, pad_sequence_to_multiple_of=48,
                       max_input_tokens=200, max_total_tokens=260, max_batch_prefill_tokens=400, max_batch_size=10,
                       block_size=16)


def _run(seed: int, num_blocks: int) -> tuple[int, int, set[object]]:
    rng = random.Random(seed)
    scheduler = Scheduler(SchedulerConfig(BUCKETS.max_batch_prefill_tokens, 100_000, block_size=16,
                                          max_waiting_tokens=rng.choice([0, 3]), waiting_served_ratio=0.3,
                                          buckets=BUCKETS), BlockManager(num_blocks, 16, enable_prefix_caching=True))
    shared = [rng.randint(10, 900) for _ in range(64)]
    pending = []
    for request_id in range(1, 61):
        length = rng.choice([1, 2, rng.randint(3, 60), rng.randint(60, 200)])
        prompt = (shared[:length] if rng.random() < 0.2 else []) + [rng.randint(10, 900) for _ in range(length)]
        prompt = prompt[:200]
        pending.append(Sequence(request_id, prompt, rng.randint(1, BUCKETS.max_total_tokens - len(prompt))))
    warmed = warmup_shapes(BUCKETS)
    allowed = {*warmed.prefill, *warmed.decode}
    num_steps = num_preempted = 0
    seen: set[object] = set()
    while pending or scheduler.has_work():
        for _ in range(rng.choice([0, 0, 1, 4])):
            if pending:
                scheduler.add(pending.pop(0))
        step = scheduler.schedule()
        if step is None:
            continue
        padded = pad_step(step.items, BUCKETS, scratch_block=num_blocks, block_size=16)   # raises if outside
        shapes = {shape for shape in (padded.prefill, padded.decode) if shape is not None}
        assert shapes <= allowed, (shapes - allowed, [len(i.token_ids) for i in step.items])
        seen |= shapes
        generations = [Generation(item.request_id, Token(rng.randint(10, 900), -1.0))
                       for item in step.items if item.sample]
        scheduler.postprocess(step, generations)
        scheduler.take_finished_request_ids()
        num_steps += 1
        num_preempted += len(step.preempted_request_ids)
    return num_steps, num_preempted, seen


@pytest.mark.parametrize("seed", range(6))
def test_every_step_pads_to_a_warmed_shape(seed: int) -> None:
    num_steps, _, seen = _run(seed, num_blocks=400)
    assert num_steps > 20 and len(seen) >= 4


def test_preemption_recompute_is_chunked_to_max_input_tokens() -> None:
    # 40 blocks (640 tokens) for up to 10 sequences of up to 260 tokens: preemptions, and their recomputed
    # prompts (prompt + generated, up to 259 tokens > 200) come back in chunks of at most 200.
    preemptions = sum(_run(seed, num_blocks=40)[1] for seed in range(4))
    assert preemptions > 0
