"""The OpenAI bodies we build: they match the documented schema (openai_schemas) and parse with the openai SDK's
own types; finish reasons, usage, logprob shapes and offsets."""
from __future__ import annotations

import json
import math
from typing import Any

import pytest
from openai.types import Completion as SdkCompletion
from openai.types.chat import ChatCompletion as SdkChatCompletion
from openai.types.chat import ChatCompletionChunk as SdkChatCompletionChunk
from pydantic import BaseModel

from textgen_server.router import openai_schemas as schemas
from textgen_server.router.openai_responses import (
    ChoiceOutput,
    LogprobEntry,
    ResponseMeta,
    TopLogprob,
    build_chat_chunk,
    build_chat_completion,
    build_completion,
    build_completion_chunk,
    build_completion_logprobs,
    build_usage_chunk,
    openai_finish_reason,
)

META = ResponseMeta.new("chatcmpl", "my-model", "1.2.3")


def entry(token: str, logprob: float, piece: str | None = None) -> LogprobEntry:
    return LogprobEntry(chosen=TopLogprob(token, logprob, token.encode()), piece=token if piece is None else piece,
                        top=[TopLogprob(token, logprob, token.encode()), TopLogprob("x", -math.inf, b"x")])


CHOICES = [ChoiceOutput(index=0, text="Hello world", finish_reason="stop", generated_tokens=2,
                        logprobs=[entry("Hello", -0.1), entry(" world", -0.2)]),
           ChoiceOutput(index=1, text="Hi", finish_reason="length", generated_tokens=1, logprobs=[entry("Hi", -0.3)])]


def both_parse(body: dict[str, Any], ours: type[BaseModel], sdk: type[BaseModel]) -> None:
    # Through JSON, as a client gets it: -inf would not survive (JSON has no infinity).
    wire = json.loads(json.dumps(body, allow_nan=False))
    ours.model_validate(wire)
    sdk.model_validate(wire)


@pytest.mark.parametrize(("tgi", "openai"), [("length", "length"), ("eos_token", "stop"),
                                              ("stop_sequence", "stop")])
def test_finish_reasons(tgi: str, openai: str) -> None:
    assert openai_finish_reason(tgi) == openai


def test_chat_completion_body() -> None:
    body = build_chat_completion(META, CHOICES, prompt_tokens=7, with_logprobs=True)
    both_parse(body, schemas.ChatCompletion, SdkChatCompletion)
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert (body["model"], body["system_fingerprint"], body["object"]) == ("my-model", "textgen-1.2.3",
                                                                          "chat.completion")
    first = body["choices"][0]["logprobs"]["content"][0]
    assert first["bytes"] == list(b"Hello") and first["top_logprobs"][1]["logprob"] == -9999.0
    assert build_chat_completion(META, CHOICES, 7, with_logprobs=False)["choices"][1]["logprobs"] is None


def test_chat_chunks_and_usage_chunk() -> None:
    role = build_chat_chunk(META, 0, {"role": "assistant", "content": ""}, None, None, include_usage=True)
    token = build_chat_chunk(META, 1, {"content": "Hi"}, [entry("Hi", -0.5)], "length", include_usage=False)
    usage = build_usage_chunk(META, "chat.completion.chunk", 4, 9)
    for chunk in (role, token, usage):
        both_parse(chunk, schemas.ChatCompletionChunk, SdkChatCompletionChunk)
    assert role["usage"] is None and "usage" not in token
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 13


def test_completion_body_and_chunk() -> None:
    body = build_completion(META, CHOICES, prompt_tokens=3, with_logprobs=True)
    both_parse(body, schemas.Completion, SdkCompletion)
    last = build_completion_chunk(META, 0, "Hi", build_completion_logprobs([entry("Hi", -0.5)], 11), "stop", True)
    both_parse(last, schemas.Completion, SdkCompletion)
    assert last["choices"][0]["logprobs"]["text_offset"] == [11] and last["usage"] is None
    # Mid-stream chunks have finish_reason null; the SDK builds those without validating (its type says non-null).
    schemas.Completion.model_validate(build_completion_chunk(META, 0, "Hi", None, None, False))


def test_completion_logprobs_offsets_follow_the_emitted_text() -> None:
    # A token holding half a character emits no text yet; the next one emits the whole character.
    entries = [entry("A", -0.1), entry("\ufffd", -0.2, piece=""), entry("\ufffd", -0.3, piece="é"), entry("b", -0.4)]
    logprobs = build_completion_logprobs(entries, start_offset=5)
    assert logprobs["text_offset"] == [5, 6, 6, 7]
    assert logprobs["tokens"] == ["A", "\ufffd", "\ufffd", "b"]
    assert logprobs["top_logprobs"][0] == {"A": -0.1, "x": -9999.0}
