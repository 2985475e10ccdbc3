"""Prompt logprobs (decoder_input_details): every prompt chunk asks for them, from position 0, exactly once.

A sequence that wants them never takes a prefix-cache hit during its first prefill (the hit's positions would
have no logprobs); once its first token is out, nothing asks any more, and a recompute after preemption may
use the cache again.
"""
from __future__ import annotations

from engine_testlib import make_scheduler, run_step, run_until_idle, tokens
from textgen_server.engine import ScheduledStep, Scheduler, Sequence, SequenceStatus


def _items_of(step: ScheduledStep, request_id: int) -> list[tuple[int, int, bool]]:
    return [(item.start_pos, len(item.token_ids), item.prefill_logprobs) for item in step.items
            if item.request_id == request_id]


def _run_collecting(scheduler: Scheduler, request_id: int) -> list[tuple[int, int, bool]]:
    collected = []
    while scheduler.has_work():
        step, _ = run_step(scheduler)
        collected += _items_of(step, request_id)
        scheduler.take_finished_request_ids()
    return collected


def test_a_sequence_wanting_prompt_logprobs_skips_the_prefix_cache() -> None:
    scheduler = make_scheduler(block_size=4, max_batch_prefill_tokens=5)
    prompt = tokens(13)
    scheduler.add(Sequence(0, prompt, 1))
    run_until_idle(scheduler)  # its three full blocks are now in the prefix cache
    wanting = Sequence(1, prompt, 3, want_prefill_logprobs=True)
    scheduler.add(wanting)
    items = _run_collecting(scheduler, 1)
    # Chunks of at most 5 from position 0 all ask, then the two decode steps do not.
    assert items == [(0, 5, True), (5, 5, True), (10, 3, True), (13, 1, False), (14, 1, False)]
    plain = Sequence(2, prompt, 1)
    scheduler.add(plain)
    step, _ = run_step(scheduler)
    assert _items_of(step, 2) == [(12, 1, False)], "a sequence that does not ask still takes the hit"


def test_preempted_mid_prompt_restarts_from_zero_asking_again() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4, max_batch_prefill_tokens=6)
    first_prompt = tokens(4)
    scheduler.add(Sequence(0, first_prompt, 6))
    victim = Sequence(1, [*first_prompt, *tokens(6, base=5000)], 2, want_prefill_logprobs=True)
    scheduler.add(victim)
    step, _ = run_step(scheduler)
    assert _items_of(step, 1) == [(0, 2, True)]
    step, _ = run_step(scheduler)  # request 0 needs a second block: the newest, mid-prompt, gives way
    assert step.preempted_request_ids == [1] and victim.status is SequenceStatus.WAITING
    # Readmitted after request 0 finished, whose first block (victim's first 4 tokens) is cached: no hit taken.
    assert _run_collecting(scheduler, 1) == [(0, 6, True), (6, 4, True), (10, 1, False)]


def test_a_recompute_after_the_first_token_does_not_ask() -> None:
    scheduler = make_scheduler(num_blocks=3, block_size=4)
    seqs = [Sequence(i, tokens(4, base=1000 * (i + 1)), 6, want_prefill_logprobs=True) for i in range(2)]
    for seq in seqs:
        scheduler.add(seq)
    step, _ = run_step(scheduler)
    assert all(item.prefill_logprobs for item in step.items)
    step, _ = run_step(scheduler)
    assert step.preempted_request_ids == [1]
    assert seqs[1].num_output_tokens == 1 and not seqs[1].needs_prefill_logprobs
    items = _run_collecting(scheduler, 1)
    assert items[0] == (0, 5, False), "the recompute covers prompt + first token, without logprobs"
