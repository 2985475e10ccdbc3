"""A concurrency limit whose waiters are served by priority: it orders both reconciles and API requests.

Priority 0 is "urgent": it may use `reserve` slots beyond the limit, and while any urgent holder is in, no
other waiter starts. The operator uses that to send the requests new pods wait on (a new TGS's StatefulSet and
ServiceAccount) first and alone: on a saturated API server every other request in flight slows them down.
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

URGENT = 0


class PriorityLimit:
    """At most `limit` holders at a time, `limit + reserve` when the newcomer is urgent. Waiters are served
    lowest priority number first, then in arrival order; non-urgent ones wait while an urgent one holds."""

    def __init__(self, limit: int, reserve: int = 0) -> None:
        if limit < 1 or reserve < 0:
            raise ValueError(f"limit={limit}, reserve={reserve}: the limit must be at least 1, the reserve >= 0")
        self._limit = limit
        self._reserve = reserve
        self._held = 0
        self._urgent_held = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def held(self) -> int:
        """Slots held now."""
        return self._held

    def _room(self, priority: int) -> bool:
        if priority == URGENT:
            return self._held < self._limit + self._reserve
        return self._urgent_held == 0 and self._held < self._limit

    def _take(self, priority: int) -> None:
        self._held += 1
        self._urgent_held += priority == URGENT

    async def acquire(self, priority: int) -> None:
        """Waits for a slot; pair every acquire with release(priority)."""
        if self._room(priority) and (not self._waiters or self._waiters[0][0] > priority):
            self._take(priority)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future     # _wake() counted the slot as ours before resolving the future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(priority)   # the slot arrived as we were cancelled: pass it on
            raise

    def release(self, priority: int) -> None:
        self._held -= 1
        self._urgent_held -= priority == URGENT
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            priority, _, future = self._waiters[0]
            if future.done():            # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            if not self._room(priority):
                return
            heapq.heappop(self._waiters)
            self._take(priority)
            future.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        """Holds one slot for the duration of the block."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release(priority)


def request_limit(in_flight: int) -> PriorityLimit:
    """The operator's write limit: `in_flight` slots in all, at most an eighth of them (at least one) for
    anything but urgent work, so a burst of new TGSs is never queued behind Services, statuses or Events."""
    ordinary = max(1, in_flight // 8)
    return PriorityLimit(ordinary, reserve=max(0, in_flight - ordinary))
