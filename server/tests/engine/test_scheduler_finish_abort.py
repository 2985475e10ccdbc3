"""Finishing on EOS or length, streaming updates, aborts (also mid-step) and the postprocess contract."""
from __future__ import annotations

import pytest

from engine_testlib import TokenFn, default_token, generations_for, make_scheduler, make_seq, run_step, run_until_idle
from textgen_server.engine import FinishReason, SequenceStatus
from textgen_server.protocol import Generation, Token

EOS = 2


def eos_at_output(index: int) -> TokenFn:
    """A fake model emitting EOS as the `index`-th generated token of a 3-token prompt."""
    return lambda request_id, position: EOS if position - 3 == index else 100 + position


@pytest.mark.parametrize(
    ("eos_token_ids", "max_new_tokens", "eos_index", "expected_num_output", "expected_reason"),
    [
        ({EOS}, 5, 2, 3, FinishReason.EOS_TOKEN),
        ({EOS}, 5, 0, 1, FinishReason.EOS_TOKEN),
        (set(), 5, 2, 5, FinishReason.LENGTH),           # empty set: EOS ignored
        ({EOS, 7}, 5, 4, 5, FinishReason.EOS_TOKEN),     # EOS on the last allowed token wins over length
        ({99}, 5, 2, 5, FinishReason.LENGTH),
        ({EOS}, 1, 3, 1, FinishReason.LENGTH),           # finishes on the prefill step
    ],
)
def test_sequences_finish_on_eos_or_length(
    eos_token_ids: set[int],
    max_new_tokens: int,
    eos_index: int,
    expected_num_output: int,
    expected_reason: FinishReason,
) -> None:
    scheduler = make_scheduler()
    seq = make_seq(0, 3, max_new_tokens=max_new_tokens, eos_token_ids=sorted(eos_token_ids))
    scheduler.add(seq)
    token_fn = eos_at_output(eos_index)
    updates = []
    while scheduler.has_work():
        updates += run_step(scheduler, token_fn)[1]
    assert [u.token_id for u in updates] == seq.output_token_ids
    assert len(updates) == expected_num_output
    assert [u.finish_reason for u in updates] == [None] * (expected_num_output - 1) + [expected_reason]
    assert (seq.status, seq.finish_reason) == (SequenceStatus.FINISHED, expected_reason)
    assert scheduler.take_finished_request_ids() == [0]
    assert scheduler.block_manager.num_used_blocks == 0


def test_updates_carry_the_shards_generation_with_logprobs() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_seq(0, 3, max_new_tokens=1))
    step = scheduler.schedule()
    assert step is not None
    generation = Generation(0, Token(42, -0.25), [Token(42, -0.25), Token(43, -1.5)])
    (update,) = scheduler.postprocess(step, [generation])
    assert (update.generation, update.token_id, update.finish_reason) == (generation, 42, FinishReason.LENGTH)


def test_abort_a_waiting_request() -> None:
    scheduler = make_scheduler()
    seq = make_seq(0, 3)
    scheduler.add(seq)
    assert scheduler.abort(0, FinishReason.STOP_SEQUENCE)
    assert (seq.status, seq.finish_reason, scheduler.has_work()) == (SequenceStatus.FINISHED, "stop_sequence", False)
    assert scheduler.take_finished_request_ids() == [], "the shard never saw it"


def test_abort_a_running_request_frees_its_blocks() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_seq(0, 9))
    run_step(scheduler)
    assert scheduler.block_manager.num_used_blocks == 3
    assert scheduler.abort(0)
    assert scheduler.block_manager.num_used_blocks == 0
    assert scheduler.take_finished_request_ids() == [0]
    assert scheduler.schedule() is None


def test_abort_of_an_unknown_request_is_a_no_op() -> None:
    assert make_scheduler().abort(12345) is False


def test_a_request_aborted_while_its_step_runs_is_skipped_by_postprocess() -> None:
    scheduler = make_scheduler()
    keep, gone = make_seq(0, 3, max_new_tokens=2), make_seq(1, 3, max_new_tokens=2)
    scheduler.add(keep)
    scheduler.add(gone)
    step = scheduler.schedule()
    assert step is not None
    scheduler.abort(1)                               # the client disconnected mid-step
    updates = scheduler.postprocess(step, generations_for(step))
    assert [u.request_id for u in updates] == [0]
    assert gone.output_token_ids == []
    run_until_idle(scheduler)
    assert keep.output_token_ids == [default_token(0, 3), default_token(0, 4)]


def test_postprocess_rejects_generations_that_do_not_match_the_step() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_seq(0, 3))
    scheduler.add(make_seq(1, 3))
    step = scheduler.schedule()
    assert step is not None
    with pytest.raises(ValueError, match="expected \\[0, 1\\]"):
        scheduler.postprocess(step, [Generation(1, Token(5, 0.0)), Generation(0, Token(5, 0.0))])
    with pytest.raises(ValueError, match="one per item with sample=True"):
        scheduler.postprocess(step, [Generation(0, Token(5, 0.0))])


def test_take_finished_request_ids_drains() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_seq(0, 3, max_new_tokens=1))
    run_step(scheduler)
    assert scheduler.take_finished_request_ids() == [0]
    assert scheduler.take_finished_request_ids() == []


@pytest.mark.parametrize(("prompt", "max_new_tokens", "match"), [([], 4, "no tokens"), ([1], 0, "max_new_tokens")])
def test_invalid_sequences_are_rejected(prompt: list[int], max_new_tokens: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_seq(0, prompt, max_new_tokens=max_new_tokens)
