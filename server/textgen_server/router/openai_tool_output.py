"""Chat choices of a request with tools: tool_calls (streamed as deltas, or whole) from the generated call.

Both paths run the same ToolStream (grammar/tools.py) over the same text, so a streamed answer's deltas add up
to the non-streamed message. A call that the grammar completed (EOS) ends with finish_reason "tool_calls"; a call
cut by max_tokens keeps "length" and its partial arguments. A choice that picked `no_tool` never gets here: it
is answered as plain text (router/openai_no_tool.py).
"""
from __future__ import annotations

import uuid
from typing import Any

from textgen_server.grammar.tools import ToolStream, merge_deltas
from textgen_server.router.openai_responses import (
    ChoiceOutput,
    LogprobEntry,
    ResponseMeta,
    build_chat_chunk,
    openai_finish_reason,
)
from textgen_server.router.stream import Finished


def new_tool_stream(index: int) -> ToolStream:
    return ToolStream(call_id=f"call_{uuid.uuid4().hex[:24]}_{index}")


def tool_choice_output(index: int, text: str, tgi_finish_reason: str, generated_tokens: int,
                       entries: list[LogprobEntry]) -> ChoiceOutput:
    """The non-streamed choice: content or tool_calls, from the whole generated text."""
    stream = new_tool_stream(index)
    deltas = stream.push(text)
    last, called = stream.finish("", tgi_finish_reason == "eos_token")
    content, calls = merge_deltas(deltas + last)
    reason = "tool_calls" if called else openai_finish_reason(tgi_finish_reason)
    return ChoiceOutput(index=index, text=content or "", finish_reason=reason, generated_tokens=generated_tokens,
                        logprobs=entries, tool_calls=calls)


def tool_event_chunk(meta: ResponseMeta, index: int, stream: ToolStream, piece: str, finished: Finished | None,
                     entry: LogprobEntry | None, include_usage: bool) -> dict[str, Any] | None:
    """The chunk of one token event (None when nothing is decided yet and there are no logprobs to send)."""
    reason = None
    if finished is None:
        deltas = stream.push(piece)
    else:
        deltas, called = stream.finish(piece, finished.finish_reason == "eos_token")
        reason = "tool_calls" if called else openai_finish_reason(finished.finish_reason)
    if not deltas and entry is None and reason is None:
        return None
    content, calls = _merge_chunk(deltas)
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if calls is not None:
        delta["tool_calls"] = calls
    return build_chat_chunk(meta, index, delta, [entry] if entry else None, reason, include_usage)


def _merge_chunk(deltas: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]] | None]:
    """Several deltas of one event as one: content joined; the call's header and argument pieces joined."""
    content = "".join(d["content"] for d in deltas if "content" in d) if any("content" in d for d in deltas) else None
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    if not calls:
        return content, None
    merged = dict(calls[0])
    merged["function"] = dict(calls[0]["function"])
    for call in calls[1:]:
        merged["function"]["arguments"] = merged["function"].get("arguments", "") + call["function"]["arguments"]
    return content, [merged]
