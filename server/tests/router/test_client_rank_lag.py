"""The router's fan-out to tensor-parallel ranks: a rank that stops answering after its peers did (stopped after
the step's last collective, so no collective times out anywhere) is a shard failure within RANK_LAG_SECONDS,
never a router that waits forever. The stubs are stand-ins for gRPC stubs: only their timing matters here."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from textgen_server.router import client as client_module
from textgen_server.router.client import ShardClient, ShardLagError


def _client(num_ranks: int) -> ShardClient:
    shard_client = ShardClient.__new__(ShardClient)
    shard_client._stubs = list(range(num_ranks))  # the call below gets the rank as its "stub"
    return shard_client


async def _answer(rank: int, stuck: set[int], failing: set[int]) -> str:
    if rank in failing:
        raise RuntimeError(f"rank {rank} failed")
    if rank in stuck:
        await asyncio.sleep(3600)
    await asyncio.sleep(0.01 * rank)
    return f"answer {rank}"


def _answers(num_ranks: int, stuck: set[int] = frozenset(), failing: set[int] = frozenset()) -> Any:
    return asyncio.run(_client(num_ranks)._answers(lambda rank: _answer(rank, set(stuck), set(failing))))


def test_every_rank_answers_in_rank_order() -> None:
    assert _answers(3) == ["answer 0", "answer 1", "answer 2"]


def test_a_rank_stuck_after_its_peers_answered_is_a_shard_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "RANK_LAG_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(ShardLagError, match=r"rank\(s\) \[1\] did not answer"):
        _answers(2, stuck={1})
    assert time.monotonic() - started < 2


def test_a_failing_rank_fails_the_call_at_once_with_its_own_error() -> None:
    with pytest.raises(RuntimeError, match="rank 1 failed"):
        _answers(2, stuck={0}, failing={1})
