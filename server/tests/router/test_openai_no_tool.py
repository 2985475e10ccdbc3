"""NoToolSwitch (router/openai_no_tool.py) over a scripted stand-in for the Batcher (no shard, no model: only the
event order and which requests are submitted or aborted are under test; the real launcher path is in
server/tests/grammar/test_tool_no_tool_server.py)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from textgen_server.protocol import SamplingParams
from textgen_server.router.openai_no_tool import NoToolSwitch
from textgen_server.router.schemas import Token
from textgen_server.router.stream import Finished, TokenEvent
from textgen_server.router.validation import ValidRequest


def _events(pieces: list[str], reason: str = "eos_token") -> list[TokenEvent]:
    events = [TokenEvent(index=i, token=Token(id=i, text=p, logprob=-1.0, special=False), top_tokens=[])
              for i, p in enumerate(pieces)]
    last = events[-1]
    events[-1] = TokenEvent(index=last.index, token=last.token, top_tokens=[],
                            finished=Finished(reason, "".join(pieces), len(pieces)))
    return events


class ScriptedBatcher:
    def __init__(self, plain: list[TokenEvent]) -> None:
        self.plain = plain
        self.submitted: list[ValidRequest] = []
        self.aborted: list[tuple[int, str]] = []
        self.consumed = 0                      # events of the first request handed out

    def submit(self, request: ValidRequest) -> tuple[int, AsyncGenerator[TokenEvent, None]]:
        self.submitted.append(request)
        return 2, self._yield(self.plain, count=False)

    def abort(self, request_id: int, reason: str = "cancelled") -> None:
        self.aborted.append((request_id, reason))

    async def _yield(self, events: list[TokenEvent], count: bool) -> AsyncGenerator[TokenEvent, None]:
        for event in events:
            if count:
                self.consumed += 1
            yield event


PLAIN_REQUEST = ValidRequest(prompt_ids=[1, 2], params=SamplingParams(), max_new_tokens=8, stop_sequences=(),
                             details=True, decoder_input_details=False, return_full_text=False, report_seed=True)


def _run(first: list[TokenEvent], plain: list[TokenEvent]) -> tuple[NoToolSwitch, ScriptedBatcher, list[str]]:
    batcher = ScriptedBatcher(plain)
    switch = NoToolSwitch(batcher, 1, batcher._yield(first, count=True), PLAIN_REQUEST)

    async def collect() -> list[str]:
        return [event.token.text async for event in switch.events()]

    return switch, batcher, asyncio.run(collect())


def test_no_tool_drops_the_call_and_answers_from_the_plain_request() -> None:
    first = _events(['{"', 'name', '":"', 'no', '_tool', '"', ',"', 'parameters', '":{}}'])
    switch, batcher, texts = _run(first, _events(["Hello", " there", "!"]))
    assert texts == ["Hello", " there", "!"]             # nothing of the call reaches the client
    assert batcher.consumed == 6                          # dropped right at the name's closing quote
    assert batcher.aborted == [(1, "no_tool")] and batcher.submitted == [PLAIN_REQUEST]
    assert switch.plain and switch.plain_id == 2


def test_a_real_call_is_released_whole_and_in_order() -> None:
    pieces = ['{"', 'name', '":"', 'no', '_tool', '_x', '"', ',"parameters":{"a":1}}']
    switch, batcher, texts = _run(_events(pieces), _events(["unused"]))
    assert texts == pieces and not switch.plain
    assert batcher.aborted == [] and batcher.submitted == []


def test_a_call_cut_before_its_name_is_released_as_generated() -> None:
    pieces = ['{"', 'name', '":"', 'no']
    switch, batcher, texts = _run(_events(pieces, reason="length"), _events(["unused"]))
    assert texts == pieces and not switch.plain and batcher.submitted == []
