"""Queue: one reconcile per key at a time, coalescing, retries with backoff, blocked keys re-checked."""
from __future__ import annotations

import asyncio

from textgen_operator.reconciler import NodeCapacity
from textgen_operator.workqueue import Key, Queue


def test_events_during_a_run_coalesce_into_one_more_run() -> None:
    calls: list[Key] = []
    gate = asyncio.Event()

    async def reconcile(key: Key) -> bool:
        calls.append(key)
        await gate.wait()
        return False

    async def scenario() -> None:
        queue = Queue(reconcile, max_concurrent=4, blocked_retry_seconds=30)
        queue.enqueue(("ns", "a"))
        await asyncio.sleep(0)
        for _ in range(5):
            queue.enqueue(("ns", "a"))         # five events while the first run is in flight
        queue.enqueue(("ns", "b"))
        await asyncio.sleep(0)
        gate.set()
        await queue.drain()

    asyncio.run(scenario())
    assert calls.count(("ns", "a")) == 2 and calls.count(("ns", "b")) == 1


def test_failures_retry_with_backoff_and_blocked_keys_are_remembered() -> None:
    attempts: list[float] = []

    async def reconcile(key: Key) -> bool:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise RuntimeError("API server hiccup")
        return True     # then blocked on something outside (e.g. a missing Secret)

    async def scenario() -> Queue:
        queue = Queue(reconcile, max_concurrent=1, blocked_retry_seconds=3600)
        queue.enqueue(("ns", "a"))
        while len(attempts) < 3:
            await asyncio.sleep(0.05)
        await queue.drain()
        return queue

    queue = asyncio.run(scenario())
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95, f"exponential backoff expected, got gaps {gaps}"
    assert queue.blocked == {("ns", "a")}


def test_node_capacity_tracks_the_largest_node() -> None:
    nodes = NodeCapacity()
    assert nodes.largest() is None
    nodes.update("cpu-0", {"cpu": "16"})
    assert nodes.largest() == {}
    nodes.update("gpu-0", {"nvidia.com/gpu": "8"})
    nodes.update("gpu-1", {"nvidia.com/gpu": "4"})
    assert nodes.largest() == {"nvidia.com/gpu": 8}
    nodes.update("gpu-0", None)
    assert nodes.largest() == {"nvidia.com/gpu": 4}


def test_new_keys_jump_ahead_of_re_reconciles() -> None:
    order: list[Key] = []

    async def reconcile(key: Key) -> bool:
        order.append(key)
        await asyncio.sleep(0.01)
        return False

    async def scenario() -> None:
        queue = Queue(reconcile, max_concurrent=1, blocked_retry_seconds=30)
        queue.enqueue(("ns", "old"))
        await queue.drain()                       # "old" has been reconciled once
        order.clear()
        queue.enqueue(("ns", "busy"))             # takes the only slot
        await asyncio.sleep(0)
        queue.enqueue(("ns", "old"))              # a re-reconcile waits...
        queue.enqueue(("ns", "new"))              # ...and a first one, enqueued later, goes first
        await queue.drain()

    asyncio.run(scenario())
    assert order == [("ns", "busy"), ("ns", "new"), ("ns", "old")]
