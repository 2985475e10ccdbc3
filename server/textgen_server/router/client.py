"""The router's gRPC client for its shards (grpc.aio over unix sockets).

With several shards (tensor parallelism) every call goes to all of them at once, as in TGI's sharded client:
each rank runs the same step on its slice of the model (the ranks' collectives need every one of them), and
rank 0's answer is used. The ranks cannot drift apart: the tokens a step computes come from the router's
StepItems (rank 0's samples), never from a rank's own sampling. Warmup is the exception that reads every
answer: the KV budget is the smallest any rank could allocate. Conversion between protocol dataclasses and protobuf lives in
textgen_server.shard.convert, shared with the servicer so both ends agree by construction.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from textgen_server.pb import shard_pb2 as pb
from textgen_server.pb import shard_pb2_grpc as pb_grpc
from textgen_server.protocol import Generation, ModelInfo, StepItem, WarmupResult, WarmupSpec
from textgen_server.shard import convert

T = TypeVar("T")

# Step requests for large batches exceed gRPC's 4 MiB default; nothing here is untrusted (a local socket).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


# How long the other ranks may take to answer after the first one did; the shards' collective timeout
# (shard/distributed.COLLECTIVE_TIMEOUT_S) is the same: ranks lagging further apart than that are broken anyway.
RANK_LAG_SECONDS = 5.0


class ShardLagError(RuntimeError):
    """Some ranks answered a call and others did not within RANK_LAG_SECONDS."""


class ShardClient:
    """One channel per shard; methods mirror the Shard service with protocol dataclasses in and out."""

    def __init__(self, channels: list[grpc.aio.Channel]) -> None:
        self._channels = channels
        # The generated *_pb2_grpc module carries no type hints (protoc writes none for it).
        self._stubs = [pb_grpc.ShardStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
        # Rank 0's own compute time per step, summed: with the router's step time it splits where time goes.
        self.shard_forward_seconds = 0.0

    @classmethod
    async def connect(cls, socket_paths: list[str], timeout: float = 30.0) -> "ShardClient":
        """Opens a channel to every socket and waits until each is connected."""
        channels = [grpc.aio.insecure_channel(f"unix://{path}", options=CHANNEL_OPTIONS) for path in socket_paths]
        await asyncio.wait_for(asyncio.gather(*(channel.channel_ready() for channel in channels)), timeout)
        return cls(channels)

    async def info(self) -> ModelInfo:
        """Rank 0's model facts, after checking that the ranks are the group the router connected to."""
        answers = [convert.model_info_from_pb(a) for a in await self._answers(lambda s: s.Info(pb.InfoRequest()))]
        for index, info in enumerate(answers):
            if info.rank != index or info.num_shards != len(answers):
                raise RuntimeError(f"socket {index} is rank {info.rank} of {info.num_shards} shards, expected rank "
                                   f"{index} of {len(answers)}: a stale shard from another launch holds it")
        return answers[0]

    async def health(self) -> None:
        await self._all(lambda stub: stub.Health(pb.HealthRequest()))

    async def warmup(self, spec: WarmupSpec) -> WarmupResult:
        request = convert.warmup_spec_to_pb(spec)
        results = [convert.warmup_result_from_pb(a) for a in await self._answers(lambda s: s.Warmup(request))]
        # Block ids below the smallest count exist on every rank.
        smallest = min(results, key=lambda result: result.num_blocks)
        return dataclasses.replace(smallest, duration_seconds=max(r.duration_seconds for r in results))

    async def step(self, items: list[StepItem], is_prefill: bool) -> list[Generation]:
        """One forward step on every shard: Prefill when any item is a prompt chunk, else Decode."""
        request = convert.step_request_to_pb(items)
        if is_prefill:
            response = await self._all(lambda stub: stub.Prefill(request))
        else:
            response = await self._all(lambda stub: stub.Decode(request))
        self.shard_forward_seconds += response.forward_ns / 1e9
        return convert.generations_from_pb(response)

    async def filter(self, request_ids: list[int]) -> None:
        request = pb.FilterBatchRequest(request_ids=request_ids)
        await self._all(lambda stub: stub.FilterBatch(request))

    async def clear(self) -> None:
        await self._all(lambda stub: stub.ClearCache(pb.ClearCacheRequest()))

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))

    async def _all(self, call: Callable[[Any], Awaitable[T]]) -> T:
        return (await self._answers(call))[0]

    async def _answers(self, call: Callable[[Any], Awaitable[T]]) -> list[T]:
        """Every rank's answer, in rank order. Once one rank has answered, the others get RANK_LAG_SECONDS more:
        ranks run the same step in lockstep through their collectives, so a rank that stops (SIGSTOP, a hang)
        after the step's last collective would leave the others idle, never timing out, and the router waiting
        forever; it is a broken shard instead, which stops the launcher as any shard failure does."""
        tasks = [asyncio.ensure_future(call(stub)) for stub in self._stubs]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
            if pending:
                _, late = await asyncio.wait(pending, timeout=RANK_LAG_SECONDS)
                if late:
                    ranks = sorted(tasks.index(task) for task in late)
                    raise ShardLagError(f"rank(s) {ranks} did not answer within {RANK_LAG_SECONDS:.0f} s of the "
                                        "others: a tensor-parallel rank is stuck or stopped")
            return [task.result() for task in tasks]  # rank order; re-raises the first failure
        finally:
            for task in tasks:
                task.cancel()
