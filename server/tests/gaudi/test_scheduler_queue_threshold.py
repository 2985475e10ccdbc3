"""QUEUE_THRESHOLD_MS in the scheduler: admission follows engine/queue_policy.py when set, FIFO (TGI) when not."""
from __future__ import annotations

import time

from textgen_server.engine import BlockManager, Scheduler, SchedulerConfig, Sequence


def scheduler(queue_threshold_ms: int | None, max_batch_prefill_tokens: int = 1000) -> Scheduler:
    config = SchedulerConfig(max_batch_prefill_tokens=max_batch_prefill_tokens, max_batch_total_tokens=100_000,
                             waiting_served_ratio=0.0, block_size=4, queue_threshold_ms=queue_threshold_ms)
    return Scheduler(config, BlockManager(256, 4, enable_prefix_caching=False))


def seq(request_id: int, num_prompt_tokens: int, waited_s: float) -> Sequence:
    return Sequence(request_id, list(range(100, 100 + num_prompt_tokens)), 4,
                    arrival_time=time.monotonic() - waited_s)


def first_step_order(sched: Scheduler, seqs: list[Sequence]) -> list[int]:
    for s in seqs:
        sched.add(s)
    step = sched.schedule()
    assert step is not None
    return [item.request_id for item in step.items]


WORKLOAD = [(1, 40, 0.01), (2, 8, 0.02), (3, 90, 5.0), (4, 8, 0.0)]   # (id, prompt tokens, seconds waited)


def test_fifo_without_a_threshold() -> None:
    assert first_step_order(scheduler(None), [seq(*w) for w in WORKLOAD]) == [1, 2, 3, 4]


def test_overdue_first_then_shortest() -> None:
    # 3 waited 5 s (> 120 ms): first; then the short prompts by arrival (2 before 4), then 1.
    assert first_step_order(scheduler(120), [seq(*w) for w in WORKLOAD]) == [3, 2, 4, 1]


def test_the_prefill_budget_is_spent_in_policy_order() -> None:
    # 106 tokens of prefill budget: the overdue 90-token prompt, then the two 8-token ones; 1 (40) waits.
    sched = scheduler(120, max_batch_prefill_tokens=106)
    assert first_step_order(sched, [seq(*w) for w in WORKLOAD]) == [3, 2, 4]
    assert sched.num_waiting == 1


def test_preempted_sequences_stay_first() -> None:
    sched = scheduler(0)
    short_fresh, long_preempted = seq(1, 4, 1.0), seq(2, 60, 0.0)
    long_preempted.num_preemptions = 1
    assert first_step_order(sched, [short_fresh, long_preempted]) == [2, 1]
