"""PriorityLimit: slots by priority, a reserve that only urgent holders may use, and urgent work going alone."""
from __future__ import annotations

import asyncio

import pytest

from textgen_operator.limits import URGENT, PriorityLimit, request_limit

ORDINARY = 3


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_hands_slots_over_in_priority_order() -> None:
    async def scenario() -> list[str]:
        limit, got = PriorityLimit(1), []
        await limit.acquire(ORDINARY)

        async def waiter(name: str, priority: int) -> None:
            await limit.acquire(priority)
            got.append(name)
            limit.release(priority)

        tasks = [asyncio.create_task(waiter("low", 5)), asyncio.create_task(waiter("high", 1)),
                 asyncio.create_task(waiter("low-later", 5))]
        await _settle()
        limit.release(ORDINARY)
        await asyncio.gather(*tasks)
        return got

    assert asyncio.run(scenario()) == ["high", "low", "low-later"]


def test_urgent_holders_use_the_reserve_and_pause_everyone_else() -> None:
    async def scenario() -> None:
        limit = PriorityLimit(2, reserve=3)
        for _ in range(5):                         # 2 + 3: urgent work is not held back by the ordinary limit
            await limit.acquire(URGENT)
        assert limit.held == 5
        sixth = asyncio.create_task(limit.acquire(URGENT))
        ordinary = asyncio.create_task(limit.acquire(ORDINARY))
        await _settle()
        assert not sixth.done() and not ordinary.done()
        limit.release(URGENT)                      # the waiting urgent one goes first
        await _settle()
        assert sixth.done() and not ordinary.done()
        for _ in range(4):                         # one urgent holder left: ordinary work still waits
            limit.release(URGENT)
        await _settle()
        assert not ordinary.done() and limit.held == 1
        limit.release(URGENT)                      # no urgent holder: ordinary work resumes
        await _settle()
        assert ordinary.done() and limit.held == 1

    asyncio.run(scenario())


def test_ordinary_work_stays_within_the_limit() -> None:
    async def scenario() -> None:
        limit = PriorityLimit(2, reserve=10)
        await limit.acquire(ORDINARY)
        await limit.acquire(ORDINARY)
        third = asyncio.create_task(limit.acquire(ORDINARY))
        await _settle()
        assert not third.done()                    # the reserve is not for it
        await limit.acquire(URGENT)                # but an urgent newcomer gets a reserved slot at once
        assert limit.held == 3
        limit.release(URGENT)
        limit.release(ORDINARY)
        await _settle()
        assert third.done() and limit.held == 2

    asyncio.run(scenario())


def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    async def scenario() -> None:
        limit = PriorityLimit(1)
        await limit.acquire(ORDINARY)
        first = asyncio.create_task(limit.acquire(ORDINARY))
        second = asyncio.create_task(limit.acquire(ORDINARY))
        await _settle()
        first.cancel()
        await _settle()
        limit.release(ORDINARY)
        await _settle()
        assert second.done() and limit.held == 1

    asyncio.run(scenario())


def test_slot_releases_on_error() -> None:
    async def scenario() -> int:
        limit = PriorityLimit(1)
        with pytest.raises(RuntimeError):
            async with limit.slot(URGENT):
                raise RuntimeError("boom")
        return limit.held

    assert asyncio.run(scenario()) == 0


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="limit=0, reserve=0: the limit must be at least 1"):
        PriorityLimit(0)



@pytest.mark.parametrize("in_flight, ordinary, total", [(128, 16, 128), (8, 1, 8), (1, 1, 1), (20, 2, 20)])
def test_request_limit_keeps_an_eighth_for_ordinary_writes(in_flight: int, ordinary: int, total: int) -> None:
    async def scenario() -> tuple[int, int]:
        limit = request_limit(in_flight)
        while limit.held < in_flight and await _try(limit, ORDINARY):
            pass
        ordinary_held = limit.held
        while limit.held < in_flight + 1 and await _try(limit, URGENT):
            pass
        return ordinary_held, limit.held

    assert asyncio.run(scenario()) == (ordinary, total)


async def _try(limit: PriorityLimit, priority: int) -> bool:
    """Acquires a slot if one is free right now."""
    try:
        await asyncio.wait_for(limit.acquire(priority), 0.01)
        return True
    except TimeoutError:
        return False
