"""Which thread runs the model: every runner call of the servicer on one dedicated thread, one call at a time.

The runner here is a recording stand-in (not a mock of anything a user runs): the property under test is the
servicer's threading, which decides how many OpenMP thread teams torch creates (shard/servicer.py). The RPCs come
from a real gRPC thread pool of 4 workers, as in `shard/__main__.py`.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from textgen_server.pb import shard_pb2 as pb
from textgen_server.protocol import Generation, StepItem, Token, WarmupResult, WarmupSpec
from textgen_server.shard import convert
from textgen_server.shard.servicer import ShardServicer


class RecordingRunner:
    """Records the thread of each call and whether two calls ever overlapped."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.active = 0
        self.overlapped = False
        self.guard = threading.Lock()

    def _enter(self) -> None:
        with self.guard:
            self.threads.append(threading.get_ident())
            self.active += 1
            self.overlapped |= self.active > 1
        time.sleep(0.002)  # long enough for concurrent calls to overlap if nothing serialised them
        with self.guard:
            self.active -= 1

    def step(self, items: list[StepItem]) -> list[Generation]:
        self._enter()
        return [Generation(item.request_id, Token(7, -0.5)) for item in items]

    def warmup(self, spec: WarmupSpec) -> WarmupResult:
        self._enter()
        return WarmupResult(num_blocks=4, block_size=16, max_supported_total_tokens=64, duration_seconds=0.0)

    def filter(self, request_ids: list[int]) -> None:
        self._enter()

    def clear(self) -> None:
        self._enter()


def test_every_runner_call_runs_on_one_thread_one_at_a_time() -> None:
    runner = RecordingRunner()
    servicer = ShardServicer(runner)  # type: ignore[arg-type]
    step = convert.step_request_to_pb([StepItem(1, [3], 4, [0], True)])
    calls: list[Any] = [lambda: servicer.Decode(step, None), lambda: servicer.Prefill(step, None),
                        lambda: servicer.FilterBatch(pb.FilterBatchRequest(request_ids=[1]), None),
                        lambda: servicer.ClearCache(pb.ClearCacheRequest(), None),
                        lambda: servicer.Warmup(pb.WarmupRequest(max_input_tokens=8, max_total_tokens=16,
                                                                 max_prefill_tokens=8), None)]
    with ThreadPoolExecutor(max_workers=4) as grpc_workers:
        answers = list(grpc_workers.map(lambda i: calls[i % len(calls)](), range(40)))
    assert len(runner.threads) == 40
    assert len(set(runner.threads)) == 1, "runner calls ran on several threads: one OpenMP team each"
    assert runner.threads[0] != threading.get_ident()
    assert not runner.overlapped, "two runner calls ran at the same time"
    decoded = convert.generations_from_pb(answers[0])
    assert [g.token.id for g in decoded] == [7]


def test_a_runner_error_reaches_the_rpc_thread_unchanged() -> None:
    class Failing(RecordingRunner):
        def step(self, items: list[StepItem]) -> list[Generation]:
            raise ValueError("block ids [99] are outside the KV cache")

    servicer = ShardServicer(Failing())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside the KV cache"):
        servicer.Decode(convert.step_request_to_pb([StepItem(1, [3], 4, [0], True)]), None)
