"""Pure builders of OpenAI response bodies and stream chunks (plain dicts, the shapes of `openai_schemas`).

OpenAI returns text *without* the stop sequence that ended it (TGI keeps it), so the text is cut at the stop,
and a stream holds back any tail that could be the start of a stop sequence until the next token decides it.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from textgen_server.router.openai_params import finite_logprob

# TGI's finish reasons -> OpenAI's.
FINISH_REASONS = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}


@dataclass(frozen=True)
class ResponseMeta:
    """What every body and chunk of one response repeats."""

    id: str
    created: int
    model: str
    system_fingerprint: str

    @classmethod
    def new(cls, prefix: str, model: str, version: str) -> "ResponseMeta":
        return cls(id=f"{prefix}-{uuid.uuid4().hex}", created=int(time.time()), model=model,
                   system_fingerprint=f"textgen-{version}")

    def header(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model,
                "system_fingerprint": self.system_fingerprint}


@dataclass(frozen=True)
class TopLogprob:
    token: str                 # the token decoded alone (U+FFFD where it holds part of a character)
    logprob: float
    raw: bytes                 # its exact bytes


@dataclass(frozen=True)
class LogprobEntry:
    """One generated token's logprob data: the token, its text piece in the output, its alternatives."""

    chosen: TopLogprob
    piece: str
    top: list[TopLogprob]


@dataclass
class ChoiceOutput:
    """A finished choice, as the non-streaming bodies need it."""

    index: int
    text: str
    finish_reason: str                  # OpenAI's: "stop" | "length" | "tool_calls"
    generated_tokens: int
    logprobs: list[LogprobEntry] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None   # a chat choice that called a function (content is then None)


def openai_finish_reason(tgi_reason: str) -> str:
    return FINISH_REASONS.get(tgi_reason, "stop")


def trim_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """`text` up to (not including) the earliest stop sequence in it."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return text[:min(positions)] if positions else text


def held_suffix_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop sequence (it might become one)."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


@dataclass
class StreamText:
    """Streams a choice's text so that no part of a stop sequence is ever sent."""

    stops: tuple[str, ...]
    pending: str = ""

    def push(self, piece: str) -> str:
        """Text that is safe to send now."""
        text = self.pending + piece
        held = held_suffix_length(text, self.stops)
        self.pending = text[len(text) - held:] if held else ""
        return text[:len(text) - held]

    def finish(self, piece: str, stopped: bool) -> str:
        """The rest of the text at the end; cut at the stop sequence when one ended the choice."""
        text, self.pending = self.pending + piece, ""
        return trim_at_stop(text, self.stops) if stopped else text


def build_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def build_chat_logprobs(entries: list[LogprobEntry]) -> dict[str, Any]:
    return {"content": [_chat_token_logprob(entry) for entry in entries], "refusal": None}


def build_completion_logprobs(entries: list[LogprobEntry], start_offset: int) -> dict[str, Any]:
    """OpenAI's legacy shape; `top_logprobs` always includes the chosen token, as OpenAI's does."""
    offsets, offset = [], start_offset
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.piece)
    return {"tokens": [entry.chosen.token for entry in entries],
            "token_logprobs": [finite_logprob(entry.chosen.logprob) for entry in entries],
            "top_logprobs": [{**{top.token: finite_logprob(top.logprob) for top in entry.top},
                              entry.chosen.token: finite_logprob(entry.chosen.logprob)} for entry in entries],
            "text_offset": offsets}


def build_chat_completion(meta: ResponseMeta, choices: list[ChoiceOutput], prompt_tokens: int,
                          with_logprobs: bool) -> dict[str, Any]:
    return {**meta.header("chat.completion"),
            "choices": [{"index": choice.index, "message": _chat_message(choice),
                         "logprobs": build_chat_logprobs(choice.logprobs) if with_logprobs else None,
                         "finish_reason": choice.finish_reason} for choice in choices],
            "usage": build_usage(prompt_tokens, sum(choice.generated_tokens for choice in choices))}


def _chat_message(choice: ChoiceOutput) -> dict[str, Any]:
    if choice.tool_calls is not None:
        return {"role": "assistant", "content": None, "tool_calls": choice.tool_calls}
    return {"role": "assistant", "content": choice.text}


def build_completion(meta: ResponseMeta, choices: list[ChoiceOutput], prompt_tokens: int,
                     with_logprobs: bool) -> dict[str, Any]:
    return {**meta.header("text_completion"),
            "choices": [{"index": choice.index, "text": choice.text,
                         "logprobs": build_completion_logprobs(choice.logprobs, 0) if with_logprobs else None,
                         "finish_reason": choice.finish_reason} for choice in choices],
            "usage": build_usage(prompt_tokens, sum(choice.generated_tokens for choice in choices))}


def build_chat_chunk(meta: ResponseMeta, index: int, delta: dict[str, Any], logprobs: list[LogprobEntry] | None,
                     finish_reason: str | None, include_usage: bool) -> dict[str, Any]:
    """A `chat.completion.chunk`; with include_usage every chunk but the last carries `"usage": null`."""
    chunk = {**meta.header("chat.completion.chunk"),
             "choices": [{"index": index, "delta": delta,
                          "logprobs": build_chat_logprobs(logprobs) if logprobs is not None else None,
                          "finish_reason": finish_reason}]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def build_completion_chunk(meta: ResponseMeta, index: int, text: str, logprobs: dict[str, Any] | None,
                           finish_reason: str | None, include_usage: bool) -> dict[str, Any]:
    chunk = {**meta.header("text_completion"),
             "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def build_usage_chunk(meta: ResponseMeta, object_name: str, prompt_tokens: int,
                      completion_tokens: int) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, the request's usage."""
    return {**meta.header(object_name), "choices": [], "usage": build_usage(prompt_tokens, completion_tokens)}


def _chat_token_logprob(entry: LogprobEntry) -> dict[str, Any]:
    return {**_chat_top_logprob(entry.chosen), "top_logprobs": [_chat_top_logprob(top) for top in entry.top]}


def _chat_top_logprob(top: TopLogprob) -> dict[str, Any]:
    return {"token": top.token, "logprob": finite_logprob(top.logprob), "bytes": list(top.raw)}
