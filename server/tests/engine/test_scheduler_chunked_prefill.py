"""Chunked prefill: long prompts are split across steps by the prefill budget; prefix hits skip cached blocks."""
from __future__ import annotations

import pytest

from engine_testlib import item_summary, make_scheduler, make_seq, run_step, tokens

Summary = list[tuple[int, int, int, bool]]


@pytest.mark.parametrize(
    ("prompt_lengths", "budget", "expected_steps"),
    [
        ([10], 4, [[(0, 0, 4, False)], [(0, 4, 4, False)], [(0, 8, 2, True)], [(0, 10, 1, True)]]),
        ([5], 4, [[(0, 0, 4, False)], [(0, 4, 1, True)], [(0, 5, 1, True)]]),
        ([8], 8, [[(0, 0, 8, True)], [(0, 8, 1, True)]]),
        (
            [6, 6],
            4,
            [
                [(0, 0, 4, False)],
                [(0, 4, 2, True), (1, 0, 2, False)],
                [(0, 6, 1, True), (1, 2, 4, True)],
                [(0, 7, 1, True), (1, 6, 1, True)],
            ],
        ),
    ],
)
def test_prompts_are_split_by_the_prefill_budget(
    prompt_lengths: list[int], budget: int, expected_steps: list[Summary]
) -> None:
    scheduler = make_scheduler(max_batch_prefill_tokens=budget)
    for request_id, length in enumerate(prompt_lengths):
        scheduler.add(make_seq(request_id, length, max_new_tokens=50))
    for expected in expected_steps:
        step, _ = run_step(scheduler)
        assert item_summary(step) == expected


def test_only_the_first_chunk_carries_params() -> None:
    scheduler = make_scheduler(max_batch_prefill_tokens=3)
    scheduler.add(make_seq(0, 7))
    params = [run_step(scheduler)[0].items[0].params for _ in range(3)]
    assert params[0] is not None and params[1:] == [None, None]


def test_a_chunk_streams_nothing_until_the_prompt_is_done() -> None:
    scheduler = make_scheduler(max_batch_prefill_tokens=4)
    scheduler.add(make_seq(0, 9))
    assert [len(run_step(scheduler)[1]) for _ in range(4)] == [0, 0, 1, 1]


def test_prefix_hit_starts_after_the_cached_blocks_and_resends_the_prefix() -> None:
    scheduler = make_scheduler(block_size=4, max_batch_prefill_tokens=100)
    shared = tokens(10)
    scheduler.add(make_seq(0, shared, max_new_tokens=1))
    run_step(scheduler)                                     # computes and caches blocks [0:4], [4:8]
    scheduler.add(make_seq(1, shared + [5, 6, 7], max_new_tokens=1))
    step, _ = run_step(scheduler)
    (item,) = step.items
    assert (item.start_pos, item.token_ids) == (8, shared[8:] + [5, 6, 7])
    assert item.prefix_token_ids == shared[:8]
    assert item.num_prompt_tokens == 13
    assert step.num_prefill_tokens == 5, "cached tokens do not count against the prefill budget"
