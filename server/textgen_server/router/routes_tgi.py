"""TGI's routes: POST /generate, /generate_stream, /tokenize; GET /, /info (POST / and /invocations: routes_compat).

Each generation route validates, then admits (503/429) and submits to the batcher with no `await` in between,
so a burst cannot overshoot --max-concurrent-requests. Shard failures answer 424 "generation", as TGI.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
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
from textgen_server.router.grammar_routes import prepare_grammar
from textgen_server.router.responses import (
    Candidate,
    build_generate_response,
    build_stream_response,
    dump_generate_response,
    dump_stream_response,
    format_sse,
    pick_best,
)
from textgen_server.router.schemas import GenerateRequest, GenerateResponse, Info, PrefillToken, SimpleToken, Token
from textgen_server.router.stream import TokenEvent, Tokenizer
from textgen_server.router.validation import ValidationError, ValidRequest, build_candidates, validate

logger = logging.getLogger(__name__)

_Responses = dict[int | str, dict[str, Any]]
_GENERATE_ERRORS: _Responses = {code: ERROR_RESPONSES[code] for code in (400, 413, 422, 424, 429, 503)}
_TOKENIZE_ERRORS: _Responses = {code: ERROR_RESPONSES[code] for code in (400, 413, 422, 503)}
_SSE: _Responses = {200: {"content": {"text/event-stream": {}}, "description": "server-sent events, one per token"}}
Admitted = tuple[Serving, ValidRequest]


def register_tgi_routes(app: FastAPI, state: RouterState) -> None:
    """Adds TGI's routes to `app`."""

    async def info() -> Any:
        if state.serving is None:
            return error_response(503, "the model is still loading; retry when /health returns 200", "unhealthy")
        return state.serving.info

    for path in ("/", "/info"):
        app.add_api_route(path, info, methods=["GET"], response_model=Info, responses={503: ERROR_RESPONSES[503]})

    @app.post("/generate", response_model=GenerateResponse, responses=_GENERATE_ERRORS)
    async def generate(body: GenerateRequest, request: Request) -> Response:
        await prepare_grammar(state, body.parameters.grammar)
        admitted = prepare(state, body, streaming=False)
        return admitted if isinstance(admitted, JSONResponse) else await _generate(*admitted, body.inputs, request)

    @app.post("/generate_stream", responses={**_SSE, **_GENERATE_ERRORS})
    async def generate_stream(body: GenerateRequest) -> Response:
        await prepare_grammar(state, body.parameters.grammar)
        admitted = prepare(state, body, streaming=True)
        return admitted if isinstance(admitted, JSONResponse) else _start_stream(*admitted, body.inputs)

    @app.post("/tokenize", response_model=list[SimpleToken], responses=_TOKENIZE_ERRORS)
    async def tokenize(body: GenerateRequest) -> Any:
        if state.serving is None:
            return error_response(503, "the model is still loading; retry when /health returns 200", "unhealthy")
        return build_simple_tokens(state.serving.tokenizer, body.inputs)


def prepare(state: RouterState, body: GenerateRequest, streaming: bool) -> Admitted | JSONResponse:
    """Validation (422), then admission (503/429). Public so that other route modules can reuse it."""
    serving = admit(state)
    if isinstance(serving, JSONResponse):
        return serving
    started = time.perf_counter()
    try:
        valid = _validate(serving, body, streaming)
    except ValidationError as error:
        logger.info("rejected a request: %s", error)
        return error_response(422, f"Input validation error: {error}", "validation")
    # As TGI: the time to tokenize and validate a request that passed.
    state.metrics.request_validation_duration.observe(time.perf_counter() - started)
    admitted = admit(state, valid.best_of)
    return admitted if isinstance(admitted, JSONResponse) else (admitted, valid)


def build_simple_tokens(tokenizer: Any, inputs: str) -> list[SimpleToken]:
    """POST /tokenize: each prompt token with its character span in `inputs` (special tokens span nothing)."""
    encoding = tokenizer(inputs, return_offsets_mapping=True)
    return [SimpleToken(id=token_id, text=inputs[start:stop], start=start, stop=stop)
            for token_id, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"])]


def _validate(serving: Serving, body: GenerateRequest, streaming: bool) -> ValidRequest:
    if not body.inputs:
        raise ValidationError("`inputs` cannot be empty: send at least one character of text")
    # TGI ignores a `stream` sent here; a client expecting the other kind of answer would be misled.
    if "stream" in body.model_fields_set and body.stream != streaming:
        fix = ("/generate answers with one body: use /generate_stream (or POST /) to stream" if body.stream
               else "/generate_stream always streams: use /generate (or POST /) for one body")
        raise ValidationError(f"`stream` {str(body.stream).lower()} does not fit this route; {fix}")
    if streaming and (body.parameters.best_of or 1) > 1:
        raise ValidationError("`best_of` != 1 is not allowed for this endpoint: use /generate for best_of")
    if streaming and body.parameters.decoder_input_details:
        # As TGI: a stream has no place for the prompt's tokens; computing them would be wasted work.
        raise ValidationError("`decoder_input_details` == true is not supported with streaming tokens: "
                              "use /generate to get the prompt's logprobs")
    return validate(body.parameters, serving.tokenizer(body.inputs)["input_ids"], serving.limits)


async def _generate(serving: Serving, valid: ValidRequest, inputs: str, request: Request) -> Response:
    candidates = build_candidates(valid, random.Random())
    try:
        streams = [serving.batcher.submit(candidate)[1] for candidate in candidates]
    except GenerationError as error:
        return error_response(424, str(error), "generation")
    collector: asyncio.Future[list[Candidate]] = asyncio.ensure_future(
        asyncio.gather(*(_collect(c, s) for c, s in zip(candidates, streams))))
    if not await finish_unless_disconnected(collector, request):
        # The client is gone: closing the streams aborts the requests in the scheduler.
        await asyncio.gather(*(stream.aclose() for stream in streams))
        return Response(status_code=499)
    try:
        best, others = pick_best(list(collector.result()))
    except GenerationError as error:
        await asyncio.gather(*(stream.aclose() for stream in streams))  # the other candidates stop too
        return error_response(424, str(error), "generation")
    prefill = (_prefill_tokens(serving.tokenizer, valid, best.prefill_logprobs)
               if valid.decoder_input_details else [])
    return JSONResponse(dump_generate_response(build_generate_response(best, others, inputs, prefill)))


async def _collect(request: ValidRequest, events: AsyncIterator[TokenEvent]) -> Candidate:
    tokens: list[Token] = []
    top_tokens: list[list[Token]] = []
    prefill_logprobs: list[float] = []
    async for event in events:
        if not tokens:  # the shard sends prompt logprobs with the first token only
            prefill_logprobs = event.prefill_logprobs
        tokens.append(event.token)
        top_tokens.append(event.top_tokens)
        if event.finished is not None:
            return Candidate(request=request, finished=event.finished, tokens=tokens, top_tokens=top_tokens,
                             prefill_logprobs=prefill_logprobs)
    raise GenerationError("the token stream ended without a final token")


def _start_stream(serving: Serving, valid: ValidRequest, inputs: str) -> Response:
    # Submitted here, not in the generator: the generator starts only after this handler returned, and
    # admission must count this request before the next one is admitted.
    try:
        _, events = serving.batcher.submit(valid)
    except GenerationError as error:
        return error_response(424, str(error), "generation")
    return StreamingResponse(_stream(events, valid, inputs), media_type="text/event-stream")


async def _stream(events: AsyncIterator[TokenEvent], valid: ValidRequest, inputs: str) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield format_sse(dump_stream_response(build_stream_response(event, valid, inputs)))
    except GenerationError as error:  # headers are sent: the error is the stream's last event, as in TGI
        yield format_sse({"error": str(error), "error_type": "generation"})
    finally:
        # On client disconnect Starlette cancels this generator; closing `events` aborts the request.
        await events.aclose()  # type: ignore[attr-defined]


def _prefill_tokens(tokenizer: Tokenizer, valid: ValidRequest, logprobs: list[float]) -> list[PrefillToken]:
    """details.prefill: every prompt token with log P(token | tokens before it); the first has none (null)."""
    values: list[float | None] = [None, *logprobs]
    values += [None] * (len(valid.prompt_ids) - len(values))  # a 1-token prompt has no values at all
    return [PrefillToken(id=token_id, text=tokenizer.decode([token_id]), logprob=value)
            for token_id, value in zip(valid.prompt_ids, values)]
