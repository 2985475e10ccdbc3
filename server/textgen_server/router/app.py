"""The HTTP app (FastAPI): TGI's /generate, /generate_stream, /health and /info.

The app is built before the model is ready so that /health can answer 503 during loading and warmup; the
launcher fills `RouterState.serving` once warmup is done. Errors use TGI's body {"error", "error_type"}.
"""
from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from textgen_server.router.batcher import Batcher, GenerationError
from textgen_server.router.responses import (
    build_generate_response,
    build_stream_response,
    dump_generate_response,
    dump_stream_response,
    format_sse,
)
from textgen_server.router.schemas import GenerateRequest, Info, PrefillToken, Token
from textgen_server.router.stream import Finished, TokenEvent, Tokenizer
from textgen_server.router.validation import Limits, ValidationError, ValidRequest, validate

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    LOADING = "loading"      # shards starting, model loading, warmup
    READY = "ready"
    DRAINING = "draining"    # SIGTERM received: in-flight requests finish, new ones get 503
    BROKEN = "broken"        # a shard died or failed


@dataclass
class Serving:
    """What the routes need once the model is warm."""

    batcher: Batcher
    tokenizer: Any           # transformers tokenizer (callable and a stream.Tokenizer)
    limits: Limits
    info: Info
    max_concurrent_requests: int


class RouterState:
    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.serving: Serving | None = None


def error_response(status: int, message: str, error_type: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "error_type": error_type})


def build_app(state: RouterState) -> FastAPI:
    """The FastAPI application over `state` (filled in by the launcher after warmup)."""
    app = FastAPI(title="textgen", description="TGI-compatible text generation server")

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": str(error)}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error_response(422, f"invalid request body at `{where}`: {first.get('msg')}", "validation")

    @app.get("/health")
    async def health() -> Response:
        if state.phase is Phase.READY:
            return Response(status_code=200)
        return error_response(503, f"server is {state.phase.value}", "unhealthy")

    @app.get("/info", response_model=Info)
    async def info() -> Any:
        if state.serving is None:
            return error_response(503, "the model is still loading; retry when /health returns 200", "unhealthy")
        return state.serving.info

    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request) -> Response:
        admitted = _admit(state, body)
        if isinstance(admitted, JSONResponse):
            return admitted
        serving, valid = admitted
        return await _generate(serving, valid, body.inputs, request)

    @app.post("/generate_stream")
    async def generate_stream(body: GenerateRequest) -> Response:
        admitted = _admit(state, body)
        if isinstance(admitted, JSONResponse):
            return admitted
        serving, valid = admitted
        return StreamingResponse(_stream(serving, valid, body.inputs), media_type="text/event-stream")

    @app.post("/")
    async def compat_generate(body: GenerateRequest, request: Request) -> Response:
        """TGI's root route: /generate or /generate_stream depending on `stream`."""
        return await (generate_stream(body) if body.stream else generate(body, request))

    return app


def _admit(state: RouterState, body: GenerateRequest) -> tuple[Serving, ValidRequest] | JSONResponse:
    serving = state.serving
    if state.phase is not Phase.READY or serving is None:
        return error_response(503, f"server is {state.phase.value}; not accepting requests", "unhealthy")
    if serving.batcher.num_in_flight >= serving.max_concurrent_requests:
        return error_response(429, "Model is overloaded: --max-concurrent-requests "
                              f"({serving.max_concurrent_requests}) requests are in flight", "overloaded")
    prompt_ids = serving.tokenizer(body.inputs)["input_ids"]
    try:
        return serving, validate(body.parameters, prompt_ids, serving.limits)
    except ValidationError as error:
        logger.info("rejected a request: %s", error)
        return error_response(422, f"Input validation error: {error}", "validation")


async def _generate(serving: Serving, valid: ValidRequest, inputs: str, request: Request) -> Response:
    try:
        _, events = serving.batcher.submit(valid)
    except GenerationError as error:
        return error_response(500, str(error), "generation")
    collector = asyncio.ensure_future(_collect(events))
    disconnect = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({collector, disconnect}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect.cancel()
    if not collector.done():  # client gone: closing the stream aborts the request in the scheduler
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await events.aclose()
        return Response(status_code=499)
    try:
        tokens, top_tokens, finished = collector.result()
    except GenerationError as error:
        return error_response(500, str(error), "generation")
    prefill = _prefill_tokens(serving.tokenizer, valid) if valid.decoder_input_details else []
    body = build_generate_response(finished, tokens, top_tokens, valid, inputs, prefill)
    return JSONResponse(dump_generate_response(body))


async def _collect(events: AsyncIterator[TokenEvent]) -> tuple[list[Token], list[list[Token]], Finished]:
    tokens: list[Token] = []
    top_tokens: list[list[Token]] = []
    async for event in events:
        tokens.append(event.token)
        top_tokens.append(event.top_tokens)
        if event.finished is not None:
            return tokens, top_tokens, event.finished
    raise GenerationError("the token stream ended without a final token")


async def _wait_disconnect(request: Request) -> None:
    # The body is already read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream(serving: Serving, valid: ValidRequest, inputs: str) -> AsyncIterator[bytes]:
    try:
        _, events = serving.batcher.submit(valid)
    except GenerationError as error:
        yield format_sse({"error": str(error), "error_type": "generation"})
        return
    try:
        async for event in events:
            payload = dump_stream_response(build_stream_response(event, valid, inputs))
            yield format_sse(payload)
    except GenerationError as error:
        yield format_sse({"error": str(error), "error_type": "generation"})
    finally:
        # On client disconnect Starlette cancels this generator; closing `events` aborts the request.
        await events.aclose()


def _prefill_tokens(tokenizer: Tokenizer, valid: ValidRequest) -> list[PrefillToken]:
    # Prompt logprobs are not computed by the shard yet (a later issue): ids and texts only.
    return [PrefillToken(id=token_id, text=tokenizer.decode([token_id]), logprob=None)
            for token_id in valid.prompt_ids]
