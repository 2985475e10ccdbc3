"""The work queue: one reconcile per key at a time, coalescing, backoff, and new objects first.

A burst of creations is followed by many more events for the same objects (children appear, pods start); those
re-reconciles are mostly no-ops, so first-time reconciles jump ahead of them: a new TextGenerationService gets
its StatefulSet without waiting behind hundreds of status refreshes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from textgen_operator.limits import PriorityLimit
from textgen_operator.metrics import QUEUE_DEPTH, RECONCILE_ERRORS, RECONCILE_SECONDS, RECONCILES

log = logging.getLogger("textgen_operator.workqueue")
Key = tuple[str, str]   # (namespace, name)
# Neither is the limit's URGENT, which would pause every other reconcile for as long as a first one runs.
FIRST_RUN, RERUN = 1, 2


ReconcileFn = Callable[[Key], Awaitable[bool]]


class Queue:
    """Runs at most one reconcile per key at a time; events during a run coalesce into one more run."""

    def __init__(self, reconcile_fn: ReconcileFn, max_concurrent: int, blocked_retry_seconds: float,
                 ready: asyncio.Event | None = None) -> None:
        self._reconcile = reconcile_fn
        self._ready = ready     # reconciles wait for it (the primed cache); None: start at once
        self._limit = PriorityLimit(max_concurrent)
        self._seen: set[Key] = set()         # keys reconciled at least once (later runs yield to new keys)
        self._retry_seconds = blocked_retry_seconds
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self.blocked: set[Key] = set()      # keys whose last reconcile was blocked (retried on node changes)
        self._failures: dict[Key, int] = {}  # consecutive failures per key: the backoff exponent
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, key: Key) -> None:
        """Schedules a reconcile of key (now, or right after the one in flight)."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        QUEUE_DEPTH.set(len(self._running))
        task = asyncio.get_running_loop().create_task(self._run(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def enqueue_later(self, key: Key, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    async def _run(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                retry_after, failed = await self._run_once(key, self._failures.get(key, 0))
                if failed:
                    self._failures[key] = self._failures.get(key, 0) + 1
                else:
                    self._failures.pop(key, None)
                if retry_after is not None:
                    self.enqueue_later(key, retry_after)
                if key not in self._dirty:
                    return
        finally:
            self._running.discard(key)
            QUEUE_DEPTH.set(len(self._running))

    async def _run_once(self, key: Key, failures: int) -> tuple[float | None, bool]:
        """One reconcile; returns (a delay after which to retry or None, whether it raised)."""
        if self._ready is not None:
            await self._ready.wait()
        priority = FIRST_RUN if key not in self._seen else RERUN
        await self._limit.acquire(priority)
        self._seen.add(key)
        try:
            started = time.monotonic()
            try:
                blocked = await self._reconcile(key)
                (self.blocked.add if blocked else self.blocked.discard)(key)
                RECONCILES.labels(result="blocked" if blocked else "ok").inc()
                return (self._retry_seconds if blocked else None), False
            except Exception as error:   # one broken object must never stop the others
                RECONCILES.labels(result="error").inc()
                RECONCILE_ERRORS.labels(kind=type(error).__name__).inc()
                log.warning("reconcile of %s/%s failed: %s", key[0], key[1], error,
                            extra={"tgs_namespace": key[0], "tgs_name": key[1]})
                return min(60.0, 0.5 * 2 ** failures), True
            finally:
                RECONCILE_SECONDS.observe(time.monotonic() - started)
        finally:
            self._limit.release(priority)

    def requeue_blocked(self) -> None:
        """Re-checks every blocked TGS now (the cluster changed under them)."""
        for key in list(self.blocked):
            self.enqueue(key)

    async def drain(self) -> None:
        """Waits for in-flight reconciles (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
