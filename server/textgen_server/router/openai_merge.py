"""The token events of all choices of one OpenAI request, as they come (one stream is passed through as is)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from textgen_server.router.openai_jobs import SubRequest
from textgen_server.router.stream import TokenEvent


async def merge_choice_streams(subs: list[SubRequest], streams: list[AsyncIterator[TokenEvent]]
                               ) -> AsyncGenerator[tuple[SubRequest, TokenEvent], None]:
    """Events of all choices as they come (one stream is passed through without a queue)."""
    if len(streams) == 1:
        async for event in streams[0]:
            yield subs[0], event
        return
    queue: asyncio.Queue[tuple[SubRequest, TokenEvent] | Exception | None] = asyncio.Queue()

    async def pump(sub: SubRequest, events: AsyncIterator[TokenEvent]) -> None:
        try:
            async for event in events:
                queue.put_nowait((sub, event))
            queue.put_nowait(None)
        except Exception as error:
            queue.put_nowait(error)

    tasks = [asyncio.ensure_future(pump(sub, events)) for sub, events in zip(subs, streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
