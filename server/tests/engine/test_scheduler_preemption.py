"""Preemption by recompute: the newest running sequences give their blocks back and are recomputed later."""
from __future__ import annotations

import pytest

from engine_testlib import default_token, item_summary, make_scheduler, make_seq, run_step, run_until_idle
from textgen_server.engine import Scheduler, Sequence, SequenceStatus
from textgen_server.protocol import SamplingParams


def started(num_blocks: int, num_seqs: int, max_new_tokens: int = 6) -> tuple[Scheduler, list[Sequence]]:
    """Requests with one full block of prompt each (block size 4), prefilled in one step."""
    scheduler = make_scheduler(num_blocks=num_blocks, block_size=4)
    seqs = [make_seq(i, 4, max_new_tokens=max_new_tokens, params=SamplingParams(seed=i)) for i in range(num_seqs)]
    for seq in seqs:
        scheduler.add(seq)
    run_step(scheduler)
    return scheduler, seqs


@pytest.mark.parametrize(
    ("num_blocks", "num_seqs", "expected_preempted", "expected_running"),
    [
        (4, 3, [2], [0, 1]),          # one block left: 0 takes it, 1 preempts 2 (the newest) and takes its block
        (3, 3, [2, 1], [0]),          # no block left: 0 preempts 2, then 1 is the newest and preempts itself
        (6, 3, [], [0, 1, 2]),       # three blocks left: no preemption
        (2, 2, [1], [0]),
    ],
)
def test_newest_running_sequences_are_preempted_first(
    num_blocks: int, num_seqs: int, expected_preempted: list[int], expected_running: list[int]
) -> None:
    scheduler, _ = started(num_blocks, num_seqs)
    step, _ = run_step(scheduler)           # every sequence now needs its second block
    assert step.preempted_request_ids == expected_preempted
    assert [item.request_id for item in step.items] == expected_running
    # Preempted ones wait at the front, oldest first, and the shard is told to drop their state.
    assert list(scheduler._waiting) == sorted(expected_preempted)
    assert scheduler.take_finished_request_ids() == expected_preempted


def test_nothing_is_admitted_in_a_step_that_preempted() -> None:
    scheduler, _ = started(num_blocks=3, num_seqs=2)
    scheduler.add(make_seq(9, 1))
    step, _ = run_step(scheduler)
    assert step.preempted_request_ids == [1]
    assert step.admitted_request_ids == []


def test_readmission_recomputes_prompt_and_generated_tokens_with_params_resent() -> None:
    scheduler, (_, victim) = started(num_blocks=3, num_seqs=2, max_new_tokens=6)
    generated_before = victim.output_token_ids
    run_step(scheduler)
    assert victim.status is SequenceStatus.WAITING and victim.block_ids == []
    assert victim.output_token_ids == generated_before, "preemption keeps the generated tokens"
    while victim.status is SequenceStatus.WAITING:
        step, _ = run_step(scheduler)
    (item,) = [item for item in step.items if item.request_id == victim.request_id]
    assert item.params == victim.params
    assert item.num_prompt_tokens == 4
    # The item recomputes every token known when it was scheduled; postprocess then appended one more.
    assert item.prefix_token_ids + item.token_ids == victim.token_ids[:-1]
    assert item.token_ids[-len(generated_before) :] == generated_before
    assert item.start_pos == len(item.prefix_token_ids) and item.start_pos % 4 == 0
    assert item.sample


def test_preempted_requests_finish_with_exactly_the_expected_tokens() -> None:
    scheduler, seqs = started(num_blocks=4, num_seqs=3, max_new_tokens=9)
    run_until_idle(scheduler)
    assert sum(seq.num_preemptions for seq in seqs) > 0, "the setup must force preemption"
    for seq in seqs:
        expected = [default_token(seq.request_id, 4 + n) for n in range(9)]
        assert seq.output_token_ids == expected
    assert scheduler.block_manager.num_used_blocks == 0


def test_a_partially_prefilled_sequence_can_be_preempted_and_restarted() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4, max_batch_prefill_tokens=2)
    old = make_seq(0, 2, max_new_tokens=12)
    scheduler.add(old)
    run_step(scheduler)                               # old: prefilled, 3 tokens, 1 block
    young = make_seq(1, 12, max_new_tokens=1)
    scheduler.add(young)
    step, _ = run_step(scheduler)                     # young takes the 3 blocks left, first chunk of 2
    assert item_summary(step) == [(0, 2, 1, True), (1, 0, 2, False)]
    for _ in range(4):                                # old reaches position 4 and needs a second block
        step, _ = run_step(scheduler)
        if step.preempted_request_ids:
            break
    assert step.preempted_request_ids == [1]
    assert young.status is SequenceStatus.WAITING and young.output_token_ids == []
    run_until_idle(scheduler)
    assert young.output_token_ids == [default_token(1, 12)]
    assert old.output_token_ids == [default_token(0, 2 + n) for n in range(12)]


def test_a_sequence_that_cannot_fit_alone_raises_an_actionable_error() -> None:
    scheduler = make_scheduler(num_blocks=1, block_size=4)
    scheduler.add(make_seq(0, 4, max_new_tokens=4))
    run_step(scheduler)
    with pytest.raises(RuntimeError, match="must reject"):
        scheduler.schedule()


def test_a_waiting_request_that_cannot_fit_an_empty_cache_raises_an_actionable_error() -> None:
    scheduler = make_scheduler(num_blocks=2, block_size=4)
    scheduler.add(make_seq(0, 9))
    with pytest.raises(RuntimeError, match="does not fit the KV cache alone"):
        scheduler.schedule()
