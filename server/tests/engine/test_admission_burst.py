"""A burst larger than one step's prefill budget: its tail joins at the next steps, not after max_waiting_tokens.

Issue 18 (hack/bench-server.py, 64 concurrent x 128-token prompts, budget 2097, TGI's ratio 0.3 and 20 steps):
the burst came in as 17, 18 and 16 requests, then the last 13 were fewer than floor(51 * 0.3) = 15 and waited
20 decode steps. A group the budget cut short now continues (engine/admission.py); TGI's ratio rule still holds
for requests that arrive later.
"""
from __future__ import annotations

from typing import Any

import pytest

from engine_testlib import make_scheduler, make_seq, run_step
from textgen_server.engine import Scheduler
from textgen_server.engine.admission import AdmissionState, after_step, min_group_size

BENCH = dict(num_blocks=4096, block_size=16, max_batch_prefill_tokens=2097, waiting_served_ratio=0.3,
             max_waiting_tokens=20)


def admission_steps(scheduler: Scheduler, num_requests: int, max_steps: int = 100) -> list[int]:
    """Steps until every request was admitted: how many each step admitted (0 for a step that admitted none)."""
    admitted: list[int] = []
    while sum(admitted) < num_requests:
        assert len(admitted) < max_steps, f"only {sum(admitted)} of {num_requests} admitted after {max_steps} steps"
        step, _ = run_step(scheduler)
        admitted.append(len(step.admitted_request_ids))
    return admitted


def burst(num_requests: int, prompt_len: int, **config: Any) -> Scheduler:
    scheduler = make_scheduler(**config)
    for request_id in range(num_requests):
        scheduler.add(make_seq(request_id, prompt_len, max_new_tokens=128))
    return scheduler


def test_the_bench_burst_is_admitted_in_consecutive_steps() -> None:
    # 16 full prompts and a chunk per step; before: [17, 16, 17] + [0] * 19 + [14] (14 < floor(50 * 0.3)).
    assert admission_steps(burst(64, 128, **BENCH), 64) == [17, 16, 17, 14]


@pytest.mark.parametrize(("num_requests", "prompt_len"), [(60, 128), (64, 128), (100, 100), (33, 300)])
def test_no_step_of_a_burst_goes_without_prefill_work(num_requests: int, prompt_len: int) -> None:
    # Every step until the last admission either admits or continues a prompt chunk: no pure decode step.
    scheduler = burst(num_requests, prompt_len, **BENCH)
    admitted = 0
    while admitted < num_requests:
        step, _ = run_step(scheduler)
        admitted += len(step.admitted_request_ids)
        assert step.num_prefill_tokens > 0


def test_prompts_longer_than_the_budget_keep_the_group_open() -> None:
    # A 5000-token prompt takes 2097 + 2097 + 806 tokens of three steps: the middle step admits none, yet the
    # group stays open, so with a ratio of 1.0 each next request joins once budget is left (before: the third
    # waited 20 steps, 1 < floor(2 * 1.0)).
    scheduler = burst(3, 5000, **{**BENCH, "waiting_served_ratio": 1.0})
    assert admission_steps(scheduler, 3) == [1, 0, 1, 0, 1]


def test_a_request_arriving_after_the_burst_still_waits_for_the_ratio() -> None:
    scheduler = burst(20, 128, **BENCH)
    assert admission_steps(scheduler, 20) == [17, 3]
    scheduler.add(make_seq(100, 128))   # 1 < floor(20 * 0.3) = 6: waits max_waiting_tokens steps as in TGI
    assert admission_steps(scheduler, 1) == [0] * 19 + [1]


def test_a_group_stopped_by_kv_blocks_closes() -> None:
    # 4 blocks of 16: the first request (40 tokens + 1) takes 3 blocks, the second cannot get its 3: the group
    # stops for blocks, not budget, so the second must pass the ratio (1 >= floor(1 * 1.0)) like any newcomer.
    scheduler = burst(2, 40, num_blocks=4, block_size=16, max_batch_prefill_tokens=2097, waiting_served_ratio=1.0,
                      max_waiting_tokens=20)
    step, _ = run_step(scheduler)
    assert step.admitted_request_ids == [0]
    assert scheduler._admission == AdmissionState(steps_since_admission=1, group_cut_by_budget=False)


def test_policy_table() -> None:
    cut = AdmissionState(steps_since_admission=1, group_cut_by_budget=True)
    fresh = AdmissionState(steps_since_admission=1)
    assert min_group_size(cut, 51, 0.3, 20) == 0
    assert min_group_size(fresh, 51, 0.3, 20) == 15
    assert min_group_size(AdmissionState(steps_since_admission=20), 51, 0.3, 20) == 0
    assert min_group_size(fresh, 0, 0.3, 20) == 0
    # Opens only when a step admitted (or continued an open group) and ran out of budget with requests left.
    assert after_step(fresh, 16, 13, True).group_cut_by_budget
    assert not after_step(fresh, 16, 0, True).group_cut_by_budget
    assert not after_step(fresh, 16, 13, False).group_cut_by_budget
    assert not after_step(fresh, 0, 13, True).group_cut_by_budget
    assert after_step(cut, 0, 13, True) == AdmissionState(steps_since_admission=2, group_cut_by_budget=True)
    assert after_step(cut, 0, 13, False) == AdmissionState(steps_since_admission=2, group_cut_by_budget=False)
