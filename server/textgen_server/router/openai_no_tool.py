"""`tool_choice: "auto"` when the model picks TGI's `no_tool`: the choice is answered without tools, as TGI does.

TGI (router/src/server.rs, chat.rs) generates under the tool grammar; when the call names `no_tool` it drops
that generation and generates again from the chat template *without* tools, tool prompt or grammar, with the
same parameters, and answers with that text: streamed token by token as `content` deltas, finish_reason and
usage those of the second generation. `NoToolSwitch` does the same for one choice. It holds the first
generation's events back until the call's name is complete (TGI buffers them too: nothing of a no_tool call
reaches the client, logprobs included), then either releases them (a real function: the tool_calls path) or
aborts that request and yields the events of the plain one instead (`plain` is True from then on, before its
first event is yielded). The first request is counted in `tgi_request_failure{err="no_tool"}`.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from textgen_server.grammar.tools import NO_TOOL, chosen_function
from textgen_server.router.stream import TokenEvent
from textgen_server.router.validation import ValidRequest


class Submitter(Protocol):
    """The part of the Batcher a switch uses."""

    def submit(self, request: ValidRequest) -> tuple[int, AsyncGenerator[TokenEvent, None]]: ...

    def abort(self, request_id: int, reason: str = ...) -> None: ...


class NoToolSwitch:
    """One chat choice's token events under tool_choice "auto" (see the module docstring)."""

    def __init__(self, batcher: Submitter, first_id: int, first: AsyncGenerator[TokenEvent, None],
                 plain_request: ValidRequest) -> None:
        self.batcher = batcher
        self.first_id = first_id
        self.first = first
        self.plain_request = plain_request
        self.plain_id: int | None = None    # the request answering without tools, once submitted

    @property
    def plain(self) -> bool:
        return self.plain_id is not None

    async def events(self) -> AsyncIterator[TokenEvent]:
        held: list[TokenEvent] | None = []   # None once the name is decided
        text = ""
        async for event in self.first:
            if held is None:
                yield event
                continue
            held.append(event)
            text += "" if event.token.special else event.token.text
            name = chosen_function(text)
            if name == NO_TOOL:
                break
            if name is not None or event.finished is not None:
                for kept in held:
                    yield kept
                held = None  # a real call (or one cut before its name): the tool_calls path
        else:
            return
        self.batcher.abort(self.first_id, reason="no_tool")
        await self.first.aclose()
        self.plain_id, events = self.batcher.submit(self.plain_request)
        async for event in events:
            yield event
