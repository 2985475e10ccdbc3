"""TGI's admission rule while a batch runs: waiting_served_ratio and max_waiting_tokens.

TGI (backends/v3 batching_task): new requests join a running batch of size B only if at least
floor(B * waiting_served_ratio) of them can join at once, unless the batch has run max_waiting_tokens steps
since the last admission (the admitting step counts as the first). With nothing running, admit at once.
"""
from __future__ import annotations

from typing import Any

import pytest

from engine_testlib import make_scheduler, make_seq, run_step
from textgen_server.engine import Scheduler


def running_batch(num_running: int, **config: Any) -> Scheduler:
    scheduler = make_scheduler(**config)
    for request_id in range(num_running):
        scheduler.add(make_seq(request_id, 2, max_new_tokens=100))
    step, _ = run_step(scheduler)
    assert len(step.admitted_request_ids) == num_running
    return scheduler


def admitted_at_step(scheduler: Scheduler, request_id: int, max_steps: int = 50) -> int:
    for step_index in range(1, max_steps + 1):
        step, _ = run_step(scheduler)
        if request_id in step.admitted_request_ids:
            return step_index
    raise AssertionError(f"request {request_id} not admitted within {max_steps} steps")


@pytest.mark.parametrize("max_waiting_tokens", [0, 1, 2, 3, 5, 20])
def test_a_lone_waiter_joins_after_max_waiting_tokens_steps(max_waiting_tokens: int) -> None:
    scheduler = running_batch(4, waiting_served_ratio=0.5, max_waiting_tokens=max_waiting_tokens)
    scheduler.add(make_seq(10, 3))
    # The admitting step 0 counts as 1, so steps 1 .. max_waiting_tokens-1 refuse and the next one admits;
    # 0 (TGI allows it) admits at the very next step.
    assert admitted_at_step(scheduler, 10) == max(1, max_waiting_tokens)


@pytest.mark.parametrize(
    ("num_running", "ratio", "num_waiters", "joins_next_step"),
    [
        (4, 0.5, 1, False),   # needs floor(4 * 0.5) = 2
        (4, 0.5, 2, True),
        (4, 0.3, 1, True),    # floor(1.2) = 1
        (3, 0.3, 1, True),    # floor(0.9) = 0: anyone may join
        (10, 1.0, 9, False),
        (10, 1.0, 10, True),
        (4, 0.0, 1, True),
    ],
)
def test_waiters_join_only_in_groups_of_batch_times_ratio(
    num_running: int, ratio: float, num_waiters: int, joins_next_step: bool
) -> None:
    scheduler = running_batch(num_running, waiting_served_ratio=ratio, max_waiting_tokens=100)
    for offset in range(num_waiters):
        scheduler.add(make_seq(100 + offset, 3))
    step, _ = run_step(scheduler)
    assert (len(step.admitted_request_ids) == num_waiters) is joins_next_step
    assert len(step.admitted_request_ids) in (0, num_waiters)


def test_with_nothing_running_requests_are_admitted_at_once_whatever_the_ratio() -> None:
    scheduler = make_scheduler(waiting_served_ratio=100.0, max_waiting_tokens=1000)
    scheduler.add(make_seq(0, 3))
    step, _ = run_step(scheduler)
    assert step.admitted_request_ids == [0]


def test_a_group_cut_short_by_kv_blocks_is_put_back_untouched() -> None:
    # 4 running requests hold 1 block each; 2 blocks are left. The first waiter needs both, so only one of
    # the two waiters fits: fewer than floor(4 * 0.5) = 2, so neither joins and both keep their place.
    scheduler = running_batch(4, num_blocks=6, block_size=4, waiting_served_ratio=0.5, max_waiting_tokens=100)
    scheduler.add(first := make_seq(10, 8))
    scheduler.add(second := make_seq(11, 1))
    free_before = scheduler.block_manager.num_free_blocks
    step, _ = run_step(scheduler)
    assert step.admitted_request_ids == []
    assert {item.request_id for item in step.items} == {0, 1, 2, 3}
    assert scheduler.block_manager.num_free_blocks == free_before
    assert (first.block_ids, second.block_ids, first.needs_params) == ([], [], False)
    assert list(scheduler._waiting) == [10, 11]


def test_admission_resets_the_waiting_counter() -> None:
    scheduler = running_batch(4, waiting_served_ratio=0.5, max_waiting_tokens=3)
    scheduler.add(make_seq(10, 3))
    assert admitted_at_step(scheduler, 10) == 3
    scheduler.add(make_seq(11, 3))          # batch of 5: needs floor(2.5) = 2, or 3 more steps
    assert admitted_at_step(scheduler, 11) == 3
