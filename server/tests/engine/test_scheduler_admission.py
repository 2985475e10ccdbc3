"""Scheduler admission: FIFO within the prefill, batch-size, total-token and KV-block budgets."""
from __future__ import annotations

from typing import Any

import pytest

from engine_testlib import item_summary, make_scheduler, make_seq, run_step
from textgen_server.protocol import SamplingParams

ADMISSION_CASES: list[tuple[str, list[int], dict[str, Any], list[tuple[int, int, int, bool]]]] = [
    ("prefill budget exact", [4, 4, 4], {"max_batch_prefill_tokens": 8}, [(0, 0, 4, True), (1, 0, 4, True)]),
    (
        "last one gets a chunk",
        [4, 4, 4],
        {"max_batch_prefill_tokens": 10},
        [(0, 0, 4, True), (1, 0, 4, True), (2, 0, 2, False)],
    ),
    ("batch size", [4, 4, 4], {"max_batch_size": 2}, [(0, 0, 4, True), (1, 0, 4, True)]),
    ("total tokens", [4, 4, 4], {"max_batch_total_tokens": 10}, [(0, 0, 4, True), (1, 0, 4, True)]),
    ("kv blocks", [4, 4, 4, 4], {"num_blocks": 3}, [(0, 0, 4, True), (1, 0, 4, True), (2, 0, 4, True)]),
    ("fifo: a head that does not fit blocks the rest", [8, 12, 4], {"num_blocks": 3}, [(0, 0, 8, True)]),
    ("too long for the total budget but alone", [20], {"max_batch_total_tokens": 10}, [(0, 0, 20, True)]),
]


@pytest.mark.parametrize(
    ("prompt_lengths", "config", "expected"),
    [case[1:] for case in ADMISSION_CASES],
    ids=[case[0] for case in ADMISSION_CASES],
)
def test_first_step_admits_within_every_budget(
    prompt_lengths: list[int], config: dict[str, Any], expected: list[tuple[int, int, int, bool]]
) -> None:
    scheduler = make_scheduler(**config)
    for request_id, length in enumerate(prompt_lengths):
        scheduler.add(make_seq(request_id, length))
    step = scheduler.schedule()
    assert step is not None
    assert item_summary(step) == expected
    assert step.admitted_request_ids == [item[0] for item in expected]
    assert scheduler.num_running == len(expected)
    assert scheduler.num_waiting == len(prompt_lengths) - len(expected)


def test_new_requests_join_a_running_batch_between_decode_steps() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_seq(0, 5))
    first, _ = run_step(scheduler)
    assert first.is_prefill
    scheduler.add(make_seq(1, 3))
    joined, _ = run_step(scheduler)
    assert item_summary(joined) == [(0, 5, 1, True), (1, 0, 3, True)]
    assert joined.is_prefill
    decode, _ = run_step(scheduler)
    assert item_summary(decode) == [(0, 6, 1, True), (1, 3, 1, True)]
    assert not decode.is_prefill


def test_first_item_carries_params_and_later_items_do_not() -> None:
    params = SamplingParams(do_sample=True, seed=7, temperature=0.5)
    scheduler = make_scheduler()
    scheduler.add(make_seq(0, 6, params=params))
    first, _ = run_step(scheduler)
    (item,) = first.items
    assert (item.params, item.num_prompt_tokens, item.prefix_token_ids) == (params, 6, [])
    second, _ = run_step(scheduler)
    (item,) = second.items
    assert (item.params, item.num_prompt_tokens, item.prefix_token_ids) == (None, 0, [])


def test_items_carry_the_whole_block_table_covering_the_computed_positions() -> None:
    scheduler = make_scheduler(block_size=4)
    seq = make_seq(0, 7)
    scheduler.add(seq)
    for _ in range(4):
        step, _ = run_step(scheduler)
        (item,) = step.items
        assert item.block_ids == seq.block_ids[: len(item.block_ids)]
        assert len(item.block_ids) * 4 >= item.start_pos + len(item.token_ids)


def test_max_batch_total_tokens_counts_current_lengths_of_running_sequences() -> None:
    scheduler = make_scheduler(max_batch_total_tokens=12)
    scheduler.add(make_seq(0, 6))
    run_step(scheduler)                     # request 0 now holds 7 tokens
    scheduler.add(make_seq(1, 6))           # 7 + 6 > 12: must wait
    step, _ = run_step(scheduler)
    assert [item.request_id for item in step.items] == [0]
    scheduler.add(make_seq(2, 1))           # does not jump the FIFO queue either
    step, _ = run_step(scheduler)
    assert [item.request_id for item in step.items] == [0]
    assert scheduler.num_waiting == 2


def test_schedule_returns_none_without_work() -> None:
    assert make_scheduler().schedule() is None


def test_duplicate_request_ids_are_rejected() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_seq(0, 3))
    with pytest.raises(ValueError, match="already scheduled"):
        scheduler.add(make_seq(0, 3))
