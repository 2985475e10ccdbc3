"""OpenAI-compatible request and response bodies (pydantic), as the openai SDK sends and parses them.

Request bodies refuse unknown fields that carry a value with a 422 naming them, as OpenAI's API does
(strict_body.py); fields of OpenAI's API we cannot honour are declared so that the routes can answer a clear 422
saying why. Message objects stay lenient (the SDK's own assistant messages carry response-only fields). Response models
document the bodies in /openapi.json; `openai_responses` builds the same shapes as plain dicts (cheaper per
streamed token), and the unit tests check the two agree.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from textgen_server.router.strict_body import StrictBody


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None   # an assistant turn that called functions (router/chat.py)
    tool_call_id: str | None = None                  # a `tool` turn: the call it answers


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingRequest(StrictBody):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model: str | None = None                   # informational: this server serves one model
    max_tokens: int | None = None
    temperature: float | None = None           # OpenAI's default 1.0 samples; 0 means greedy
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None      # not supported: 422 unless 0
    logit_bias: dict[str, float] | None = None  # not supported: 422 unless empty
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extension (not OpenAI's): generate max_tokens whatever EOS says; load generators use it.
    ignore_eos: bool = False
    # Other servers' constrained decoding (vLLM's guided_* and structured_outputs, TGI's /generate `grammar`):
    # 422 naming `response_format`, since ignoring them would silently give unconstrained output.
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None
    structured_outputs: Any = None
    grammar: Any = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None   # the newer name of max_tokens; wins when both are set
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None          # functions (router/openai_tools.py)
    tool_choice: str | dict[str, Any] | None = None     # "none" | "auto" (default with tools) | "required" | named
    tool_prompt: str | None = None                      # TGI's extension: the instruction after the tools
    response_format: dict[str, Any] | None = None       # text | json_object | json_schema (router/grammar_routes.py)
    # At most one call per choice is generated (as TGI), which both values allow: true permits parallel calls.
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None                  # OpenAI's deprecated form of `tools`: 422
    function_call: str | dict[str, Any] | None = None   # OpenAI's deprecated form of `tool_choice`: 422


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    logprobs: int | None = None                # number of alternatives per token (0 = chosen token only)
    echo: bool = False
    suffix: str | None = None                  # not supported: 422
    best_of: int | None = None                 # only 1 (or n): 422 otherwise
    repetition_penalty: float | None = None    # TGI's extension of /v1/completions (TGI's `repetition_penalty`)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None   # [{id, type: "function", function: {name, arguments}}]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None   # [{index, id?, type?, function: {name?, arguments}}]


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a streamed chat completion; the usage-only chunk has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    """A /v1/completions body; streamed chunks have the same shape (finish_reason null until the last)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
