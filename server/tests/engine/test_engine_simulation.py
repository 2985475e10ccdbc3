"""Randomized end-to-end simulation of the engine against a fake shard with a checked KV cache.

FakeShard is a test double for the shard process. That is legitimate here: the engine is pure bookkeeping,
and what it must get right is exactly what the fake checks: every item's tokens and positions, block tables
whose cached positions really hold the request's tokens (prefix hits, shared blocks, preemption and
recompute), params and prefix resent after every (re)admission, and FilterBatch after finish/preempt/abort.
Its "model" samples a token that depends only on (request, position), so the expected output of every
request is known in advance, whatever the batching, chunking, preemption or prefix hits.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from engine_testlib import default_token
from textgen_server.engine import (
    BlockManager,
    FinishReason,
    ScheduledStep,
    Scheduler,
    SchedulerConfig,
    Sequence,
    SequenceStatus,
    SequenceUpdate,
)
from textgen_server.protocol import Generation, SamplingParams, StepItem, Token

EOS = 3


@dataclass
class Request:
    seq: Sequence
    expected_output: list[int]
    arrival_step: int
    abort_step: int | None
    streamed: list[int] = field(default_factory=list)
    finish_reasons: list[FinishReason | None] = field(default_factory=list)

    def truth(self, position: int) -> int:
        """The token a correct engine has at `position`: prompt, then what the model sampled there."""
        num_prompt = self.seq.num_prompt_tokens
        return self.seq.token_ids[position] if position < num_prompt else token_at(self.seq, position)


def token_at(seq: Sequence, position: int) -> int:
    """The fake model's choice for `seq` at `position`; some requests meet an EOS along the way."""
    eos_position = seq.num_prompt_tokens + 3 + seq.request_id % 7
    if seq.eos_token_ids and seq.request_id % 3 == 0 and position == eos_position:
        return EOS
    return default_token(seq.request_id, position) + 10  # never EOS


KvEntry = tuple[int, int]   # (token, digest of the whole history up to it)


def digests(tokens: list[int]) -> list[int]:
    """Like a real model's KV, an entry depends on every token before it: a chained digest per position."""
    result, digest = [], 0
    for token in tokens:
        digest = hash((digest, token))
        result.append(digest)
    return result


class FakeShard:
    """Test double for a shard: a KV cache of (token, history digest) per (block, slot), checked on reads.

    Each entry is computed from the entry before it read back from the cache, as attention would, so a block
    reused after a different prefix (an aliased prefix-cache key) or overwritten by another request shows up
    as a wrong digest even when the token ids themselves agree.
    """

    def __init__(self, num_blocks: int, block_size: int, requests: dict[int, Request]) -> None:
        self.block_size = block_size
        self.kv: list[list[KvEntry | None]] = [[None] * block_size for _ in range(num_blocks)]
        self.requests = requests
        self.states: set[int] = set()

    def step(self, step: ScheduledStep) -> list[Generation]:
        ids = [item.request_id for item in step.items]
        assert len(ids) == len(set(ids)), f"a request appears twice in one step: {ids}"
        assert step.is_prefill == any(len(i.token_ids) > 1 or i.params is not None for i in step.items)
        for item in step.items:
            self._check_item(item)
        # Read everything first, then write, as one batched forward pass does.
        for item in step.items:
            self._check_cached_history(item)
        for item in step.items:
            self._write(item)
        return [self._sample(item) for item in step.items if item.sample]

    def filter(self, request_ids: list[int]) -> None:
        self.states.difference_update(request_ids)

    def _check_item(self, item: StepItem) -> None:
        request = self.requests[item.request_id]
        start, end = item.start_pos, item.start_pos + len(item.token_ids)
        assert item.token_ids, f"empty item for request {item.request_id}"
        assert len(item.block_ids) * self.block_size >= end, f"block table too short: {item}"
        if item.params is not None:
            assert item.request_id not in self.states, f"params resent without FilterBatch: {item.request_id}"
            assert item.params == request.seq.params
            assert item.num_prompt_tokens == request.seq.num_prompt_tokens
            assert item.prefix_token_ids == [request.truth(p) for p in range(start)]
            self.states.add(item.request_id)
        assert item.request_id in self.states, f"request {item.request_id}: item without params and no state"
        assert item.token_ids == [request.truth(p) for p in range(start, end)], f"wrong tokens in {item}"

    def _check_cached_history(self, item: StepItem) -> None:
        request = self.requests[item.request_id]
        truth = [request.truth(p) for p in range(item.start_pos)]
        for position, expected in enumerate(zip(truth, digests(truth))):
            assert self._read(item.block_ids, position) == expected, (
                f"request {item.request_id}: KV position {position} holds another history"
            )

    def _write(self, item: StepItem) -> None:
        start = item.start_pos
        entry = self._read(item.block_ids, start - 1) if start else None
        digest = entry[1] if entry is not None else 0
        for position, token in enumerate(item.token_ids, start=start):
            digest = hash((digest, token))
            self.kv[item.block_ids[position // self.block_size]][position % self.block_size] = (token, digest)

    def _read(self, block_ids: list[int], position: int) -> KvEntry | None:
        return self.kv[block_ids[position // self.block_size]][position % self.block_size]

    def _sample(self, item: StepItem) -> Generation:
        seq = self.requests[item.request_id].seq
        return Generation(item.request_id, Token(token_at(seq, item.start_pos + len(item.token_ids)), -1.0))


def expected_output(seq: Sequence) -> list[int]:
    output: list[int] = []
    for position in range(seq.num_prompt_tokens, seq.num_prompt_tokens + seq.max_new_tokens):
        output.append(token_at(seq, position))
        if output[-1] in seq.eos_token_ids:
            break
    return output


def build_requests(rng: random.Random, block_size: int) -> dict[int, Request]:
    # A tiny alphabet makes equal blocks after different prefixes common: chained keys must tell them apart.
    alphabet = range(100, 102) if rng.random() < 0.3 else range(100, 200)
    prefixes = [[rng.choice(alphabet) for _ in range(rng.randrange(1, 40))] for _ in range(3)]
    requests: dict[int, Request] = {}
    for request_id in range(rng.randrange(10, 40)):
        own = [rng.choice(alphabet) for _ in range(rng.randrange(0, 30))]
        prompt = (rng.choice(prefixes) if rng.random() < 0.6 else []) + own
        prompt = prompt or [150]
        params = SamplingParams(do_sample=True, seed=request_id) if request_id % 2 else SamplingParams()
        eos = [EOS] if rng.random() < 0.7 else []
        seq = Sequence(request_id, prompt, rng.randrange(1, 24), params=params, eos_token_ids=eos)
        abort_step = rng.randrange(0, 60) if rng.random() < 0.1 else None
        requests[request_id] = Request(seq, expected_output(seq), rng.randrange(0, 40), abort_step)
    return requests


def build_scheduler(rng: random.Random, requests: dict[int, Request], block_size: int) -> Scheduler:
    need = max(-(-(r.seq.num_prompt_tokens + r.seq.max_new_tokens) // block_size) for r in requests.values())
    config = SchedulerConfig(
        max_batch_prefill_tokens=rng.choice([1, 3, 8, 16, 64, 1000]),
        max_batch_total_tokens=rng.choice([64, 128, 10_000]),
        max_batch_size=rng.choice([None, 1, 3, 8]),
        waiting_served_ratio=rng.choice([0.0, 0.3, 1.0, 2.0]),
        max_waiting_tokens=rng.randrange(1, 10),
        block_size=block_size,
    )
    manager = BlockManager(need + rng.randrange(0, 6), block_size, enable_prefix_caching=rng.random() < 0.8)
    return Scheduler(config, manager)


def check_blocks(scheduler: Scheduler, requests: dict[int, Request]) -> None:
    held = [r.seq.block_ids for r in requests.values() if r.seq.status is SequenceStatus.RUNNING]
    assert all(not r.seq.block_ids for r in requests.values() if r.seq.status is not SequenceStatus.RUNNING)
    assert scheduler.block_manager.num_used_blocks == len({b for ids in held for b in ids})


def record(requests: dict[int, Request], updates: list[SequenceUpdate]) -> None:
    for update in updates:
        requests[update.request_id].streamed.append(update.token_id)
        requests[update.request_id].finish_reasons.append(update.finish_reason)


@dataclass
class Stats:
    """How often a simulation went down the hard paths."""

    num_preemptions: int = 0
    num_prefix_hit_tokens: int = 0
    num_prompt_chunks: int = 0       # items that do not reach the end of the known tokens

    def add(self, step: ScheduledStep, requests: dict[int, Request]) -> None:
        self.num_preemptions += len(step.preempted_request_ids)
        self.num_prefix_hit_tokens += sum(requests[i].seq.num_cached_tokens for i in step.admitted_request_ids)
        self.num_prompt_chunks += sum(1 for item in step.items if not item.sample)


def simulate(seed: int) -> tuple[dict[int, Request], Scheduler, Stats]:
    rng = random.Random(seed)
    block_size = rng.choice([1, 2, 4, 16])
    requests = build_requests(rng, block_size)
    scheduler = build_scheduler(rng, requests, block_size)
    shard = FakeShard(scheduler.block_manager.num_blocks, block_size, requests)
    stats = Stats()
    step_index = 0
    while step_index < 100 or scheduler.has_work():
        assert step_index < 20_000, f"seed {seed}: no progress ({scheduler.num_running} running)"
        for request in requests.values():
            if request.arrival_step == step_index:
                scheduler.add(request.seq)
            if request.abort_step == step_index:
                scheduler.abort(request.seq.request_id, FinishReason.STOP_SEQUENCE)
        step = scheduler.schedule()
        if step is not None:
            stats.add(step, requests)
            generations = shard.step(step)
            if rng.random() < 0.02 and step.items:   # a client disconnects while the step runs
                scheduler.abort(rng.choice(step.items).request_id, FinishReason.STOP_SEQUENCE)
            record(requests, scheduler.postprocess(step, generations))
            shard.filter(scheduler.take_finished_request_ids())
        check_blocks(scheduler, requests)
        step_index += 1
    return requests, scheduler, stats


def check_outputs(requests: dict[int, Request]) -> None:
    for request in requests.values():
        seq = request.seq
        assert seq.status is SequenceStatus.FINISHED
        assert request.streamed == seq.output_token_ids, f"request {seq.request_id}: stream != sequence"
        if seq.finish_reason is FinishReason.STOP_SEQUENCE:
            assert seq.output_token_ids == request.expected_output[: seq.num_output_tokens]
            continue
        assert seq.output_token_ids == request.expected_output, f"request {seq.request_id}: wrong output"
        assert request.finish_reasons[-1] is seq.finish_reason
        assert all(reason is None for reason in request.finish_reasons[:-1])


@pytest.mark.parametrize("seed", range(60))
def test_every_request_completes_with_exactly_the_expected_tokens(seed: int) -> None:
    requests, scheduler, _ = simulate(seed)
    check_outputs(requests)
    assert scheduler.block_manager.num_used_blocks == 0, "every block must be returned"
    assert (scheduler.num_running, scheduler.num_waiting) == (0, 0)


def test_the_simulations_exercise_preemption_prefix_hits_and_chunking() -> None:
    """Guards the test itself: the random workloads must hit the hard paths, or passing would mean little."""
    total = Stats()
    for seed in range(60):
        stats = simulate(seed)[2]
        total.num_preemptions += stats.num_preemptions
        total.num_prefix_hit_tokens += stats.num_prefix_hit_tokens
        total.num_prompt_chunks += stats.num_prompt_chunks
    assert total.num_preemptions >= 50, total
    assert total.num_prefix_hit_tokens >= 500, total
    assert total.num_prompt_chunks >= 100, total
