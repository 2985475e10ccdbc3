"""OpenAI's routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models.

A request becomes a `Job` (validated, one batcher request per choice), is admitted for all its choices at once
(503/429, no `await` between admission and submission), then answered as one JSON body or as SSE chunks ending
in `data: [DONE]`. Errors keep TGI's body {"error", "error_type"} and status codes (the openai SDK raises
UnprocessableEntityError, RateLimitError, ... with that body as `error.body`). A client that disconnects
cancels every choice of its request.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from textgen_server.router.app import (
    ERROR_RESPONSES,
    RouterState,
    Serving,
    admit,
    error_response,
    finish_unless_disconnected,
)
from textgen_server.router.batcher import GenerationError
from textgen_server.router.grammar_routes import chat_grammar, prepare_grammar
from textgen_server.grammar.tools import ToolStream
from textgen_server.router.openai_jobs import Job, SubRequest, build_chat_job, build_completion_job
from textgen_server.router.openai_merge import merge_choice_streams
from textgen_server.router.openai_no_tool import NoToolSwitch
from textgen_server.router.openai_responses import (
    ChoiceOutput,
    LogprobEntry,
    ResponseMeta,
    StreamText,
    TopLogprob,
    build_chat_chunk,
    build_chat_completion,
    build_completion,
    build_completion_chunk,
    build_completion_logprobs,
    build_usage_chunk,
    openai_finish_reason,
    trim_at_stop,
)
from textgen_server.router.openai_tool_output import new_tool_stream, tool_choice_output, tool_event_chunk
from textgen_server.router.openai_schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelList,
)
from textgen_server.router.stream import TokenEvent
from textgen_server.router.token_bytes import token_bytes_for
from textgen_server.router.validation import ValidationError

logger = logging.getLogger(__name__)

_SSE: dict[str, Any] = {"description": "the body; with `stream: true`, `data: {chunk}` events, then `data: [DONE]`",
                        "content": {"text/event-stream": {}}}
# Every error the app documents can come from these routes (body parsing, payload limit, validation, ...).
_RESPONSES: dict[int | str, dict[str, Any]] = {200: _SSE, **ERROR_RESPONSES}
JobBuilder = Callable[[Serving, ResponseMeta], Job]
Streams = list[AsyncIterator[TokenEvent]]


def register_openai_routes(app: FastAPI, state: RouterState) -> None:
    """Adds the OpenAI-compatible routes to `app`."""
    created = int(time.time())

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """The model's chat template over `messages`; `stream: true` answers chat.completion.chunk events."""
        def build(serving: Serving, meta: ResponseMeta) -> Job:
            return build_chat_job(body, serving.tokenizer, serving.limits, meta, serving.max_concurrent_requests)

        try:
            await prepare_grammar(state, chat_grammar(body))
        except ValidationError:
            pass  # build() raises it again and answers 422

        return await _serve(state, request, body.stream, "chatcmpl", build)

    @app.post("/v1/completions", response_model=Completion, responses=_RESPONSES)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Plain completion of `prompt` (a string, or a list: one choice per prompt and `n`)."""
        def build(serving: Serving, meta: ResponseMeta) -> Job:
            return build_completion_job(body, serving.tokenizer, serving.limits, meta,
                                        serving.max_concurrent_requests)

        return await _serve(state, request, body.stream, "cmpl", build)

    @app.get("/v1/models", response_model=ModelList, responses={503: ERROR_RESPONSES[503]})
    async def models() -> Any:
        """The one model this server serves, in OpenAI's list shape."""
        if state.serving is None:
            return error_response(503, "the model is still loading; retry when /health returns 200", "unhealthy")
        return {"object": "list", "data": [{"id": state.serving.info.model_id, "object": "model",
                                            "created": created, "owned_by": "textgen"}]}


async def _serve(state: RouterState, request: Request, stream: bool, id_prefix: str, build: JobBuilder
                 ) -> Response:
    serving = admit(state)
    if isinstance(serving, JSONResponse):
        return serving
    meta = ResponseMeta.new(id_prefix, serving.info.model_id, serving.info.version)
    try:
        job = build(serving, meta)
    except ValidationError as error:
        logger.info("rejected a request: %s", error)
        return error_response(422, f"Input validation error: {error}", "validation")
    admitted = admit(state, len(job.subs))
    if isinstance(admitted, JSONResponse):
        return admitted
    try:
        submitted = [admitted.batcher.submit(sub.request) for sub in job.subs]
    except GenerationError as error:
        return error_response(424, str(error), "generation")
    run = _Run(job, admitted, [request_id for request_id, _ in submitted], [])
    run.streams = [run.events_of(sub, request_id, events) for sub, (request_id, events) in zip(job.subs, submitted)]
    if stream:
        return StreamingResponse(_stream(run), media_type="text/event-stream")
    return await _complete(run, request)


@dataclass
class _Run:
    """A submitted job: its batcher request ids and token streams (index i belongs to job.subs[i])."""

    job: Job
    serving: Serving
    request_ids: list[int]
    streams: Streams
    switches: dict[int, NoToolSwitch] = field(default_factory=dict)   # by choice index (tool_choice "auto")

    def events_of(self, sub: SubRequest, request_id: int, events: AsyncGenerator[TokenEvent, None]
                  ) -> AsyncIterator[TokenEvent]:
        """A choice's events; one that may pick no_tool reads them through a NoToolSwitch (openai_no_tool.py)."""
        if sub.no_tool is None:
            return events
        switch = NoToolSwitch(self.serving.batcher, request_id, events, sub.no_tool)
        self.switches[sub.index] = switch
        return switch.events()

    def plain(self, sub: SubRequest) -> bool:
        """Whether a chat-with-tools choice is answered as text (the model picked no_tool)."""
        switch = self.switches.get(sub.index)
        return switch is not None and switch.plain

    def prompt_tokens(self) -> int:
        """Usage's prompt tokens: each prompt the answer came from, once (the tool prompt, the plain one, or both
        when some of the `n` choices picked no_tool)."""
        plain = [self.plain(sub) for sub in self.job.subs]
        return ((self.job.no_tool_prompt_tokens if any(plain) else 0)
                + (self.job.prompt_tokens if not all(plain) else 0))

    def abort(self) -> None:
        # Idempotent; also covers streams that were never iterated (their own cleanup never ran).
        plain_ids = [switch.plain_id for switch in self.switches.values() if switch.plain_id is not None]
        for request_id in self.request_ids + plain_ids:
            self.serving.batcher.abort(request_id)

    def logprob_entry(self, event: TokenEvent) -> LogprobEntry | None:
        if not self.job.logprobs:
            return None
        raw = token_bytes_for(self.serving.tokenizer)
        token = event.token
        chosen = TopLogprob(self.serving.tokenizer.decode([token.id], skip_special_tokens=False),
                            token.logprob if token.logprob is not None else 0.0, raw(token.id))
        return LogprobEntry(chosen=chosen, piece=_piece(event),
                            top=[TopLogprob(top.text, top.logprob or 0.0, raw(top.id)) for top in event.top_tokens])


def _piece(event: TokenEvent) -> str:
    # Special tokens (EOS, chat markers) are not part of OpenAI's content.
    return "" if event.token.special else event.token.text


async def _complete(run: _Run, request: Request) -> Response:
    gathered: asyncio.Future[list[ChoiceOutput]] = asyncio.ensure_future(asyncio.gather(
        *(_collect(run, sub, events) for sub, events in zip(run.job.subs, run.streams))))
    try:
        completed = await finish_unless_disconnected(gathered, request)
    finally:
        run.abort()
    if not completed:  # the client is gone: every choice was cancelled
        return Response(status_code=499)
    try:
        choices = sorted(gathered.result(), key=lambda choice: choice.index)
    except GenerationError as error:
        return error_response(424, str(error), "generation")
    build = build_chat_completion if run.job.chat else build_completion
    return JSONResponse(build(run.job.meta, choices, run.prompt_tokens(), run.job.logprobs))


async def _collect(run: _Run, sub: SubRequest, events: AsyncIterator[TokenEvent]) -> ChoiceOutput:
    entries: list[LogprobEntry] = []
    async for event in events:
        entry = run.logprob_entry(event)
        if entry is not None:
            entries.append(entry)
        finished = event.finished
        if finished is not None:
            text = finished.generated_text
            if finished.finish_reason == "stop_sequence":
                text = trim_at_stop(text, run.job.stops)
            if run.job.tools is not None and not run.plain(sub):
                return tool_choice_output(sub.index, text, finished.finish_reason, finished.generated_tokens,
                                          entries)
            return ChoiceOutput(index=sub.index, text=sub.prefix + text, generated_tokens=finished.generated_tokens,
                                finish_reason=openai_finish_reason(finished.finish_reason), logprobs=entries)
    raise GenerationError("the token stream ended without a final token")


@dataclass
class _ChoiceStream:
    """Per-choice streaming state: text held back for stop sequences, characters sent (for text_offset)."""

    sub: SubRequest
    text: StreamText
    offset: int = 0
    generated_tokens: int = field(default=0)
    tools: ToolStream | None = None     # chat with tools: deltas come from the call being generated


async def _stream(run: _Run) -> AsyncIterator[bytes]:
    job = run.job
    choices = {sub.index: _ChoiceStream(sub, StreamText(job.stops), offset=len(sub.prefix),
                                        tools=new_tool_stream(sub.index) if job.tools is not None else None)
               for sub in job.subs}
    merged = merge_choice_streams(job.subs, run.streams)
    try:
        for sub in job.subs:
            opening = _opening_chunk(job, sub)
            if opening is not None:
                yield _sse(opening)
        async for sub, event in merged:
            if run.plain(sub):  # the model picked no_tool: this choice is a text answer now
                choices[sub.index].tools = None
            chunk = _event_chunk(job, choices[sub.index], event, run.logprob_entry(event))
            if chunk is not None:
                yield _sse(chunk)
        if job.include_usage:
            completion_tokens = sum(choice.generated_tokens for choice in choices.values())
            yield _sse(build_usage_chunk(job.meta, "chat.completion.chunk" if job.chat else "text_completion",
                                         run.prompt_tokens(), completion_tokens))
        yield b"data: [DONE]\n\n"
    except GenerationError as error:
        yield _sse({"error": str(error), "error_type": "generation"})
    finally:
        await merged.aclose()  # stops the per-choice pumps now, not when the generator is garbage-collected
        run.abort()


def _opening_chunk(job: Job, sub: SubRequest) -> dict[str, Any] | None:
    """Chat streams open each choice with the assistant role; echoed completions with the prompt."""
    if job.chat:
        return build_chat_chunk(job.meta, sub.index, {"role": "assistant", "content": ""}, None, None,
                                job.include_usage)
    if sub.prefix:
        return build_completion_chunk(job.meta, sub.index, sub.prefix, None, None, job.include_usage)
    return None


def _event_chunk(job: Job, choice: _ChoiceStream, event: TokenEvent, entry: LogprobEntry | None
                 ) -> dict[str, Any] | None:
    """The chunk for one token event; None when there is nothing to send yet (text held back, no logprobs)."""
    finished = event.finished
    if choice.tools is not None:
        if finished is not None:
            choice.generated_tokens = finished.generated_tokens
        return tool_event_chunk(job.meta, choice.sub.index, choice.tools, _piece(event), finished, entry,
                                job.include_usage)
    reason = None
    if finished is None:
        text = choice.text.push(_piece(event))
    else:
        text = choice.text.finish(_piece(event), finished.finish_reason == "stop_sequence")
        reason = openai_finish_reason(finished.finish_reason)
        choice.generated_tokens = finished.generated_tokens
    if not text and entry is None and reason is None:
        return None
    index = choice.sub.index
    if job.chat:
        delta = {"content": text} if text or reason is None else {}
        return build_chat_chunk(job.meta, index, delta, [entry] if entry else None, reason, job.include_usage)
    logprobs = build_completion_logprobs([entry], choice.offset) if entry else None
    choice.offset += len(entry.piece) if entry else 0
    return build_completion_chunk(job.meta, index, text, logprobs, reason, job.include_usage)


def _sse(payload: dict[str, Any]) -> bytes:
    """One OpenAI server-sent event (`data: ` with a space, as OpenAI writes it)."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
