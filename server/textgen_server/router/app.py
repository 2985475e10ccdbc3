"""The HTTP app (FastAPI): shared state, admission and error bodies; the routes live in `routes_*` modules.

The app is built before the model is ready so that /health can answer 503 during loading and warmup; the
launcher fills `RouterState.serving` once warmup is done. Errors use TGI's body {"error", "error_type"}.
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from textgen_server.router.batcher import Batcher
from textgen_server.router.metrics import ServerMetrics, register_metrics
from textgen_server.router.routes_tgi_payload import (
    DEFAULT_PAYLOAD_LIMIT,
    PayloadLimit,
    PayloadTooLarge,
    build_payload_error,
)
from textgen_server.router.schemas import ErrorResponse, Info
from textgen_server.router.validation import Limits

# Documented on every route that can fail, so that /openapi.json states the error contract clients rely on.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": meaning} for code, meaning in (
        (400, "the body is not JSON in UTF-8"), (413, "payload too large (--payload-limit)"),
        (422, "input validation error"),
        (424, "generation error (the model shard failed)"), (429, "model overloaded (--max-concurrent-requests)"),
        (503, "loading, warming up, draining or broken"))}


_HTTP_ERROR_TYPES = {400: "validation", 404: "not_found", 405: "method_not_allowed"}
_HTTP_ERROR_HINTS = {
    400: "cannot read the request body ({detail}): send JSON encoded as UTF-8",
    404: "no route {method} {path}: see /openapi.json (or /docs) for the routes",
    405: "{method} is not allowed on {path}: see /openapi.json (or /docs) for the methods",
}


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
    def __init__(self, payload_limit: int = DEFAULT_PAYLOAD_LIMIT) -> None:
        self.phase = Phase.LOADING
        self.serving: Serving | None = None
        self.payload_limit = payload_limit   # bytes of request body (--payload-limit), checked before parsing
        self.metrics = ServerMetrics(self._engine_gauges, lambda: self.phase.value)

    def _engine_gauges(self) -> dict[str, float]:
        return self.serving.batcher.gauge_values() if self.serving is not None else {}


def error_response(status: int, message: str, error_type: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "error_type": error_type})


def admit(state: RouterState, num_sequences: int = 1) -> Serving | JSONResponse:
    """The serving state when a request of `num_sequences` sequences may start now; else the 503/429 answer.

    Call it and submit to the batcher without an `await` in between: admission is then atomic on the event loop,
    so a burst cannot overshoot --max-concurrent-requests."""
    serving = state.serving
    if state.phase is not Phase.READY or serving is None:
        return error_response(503, f"server is {state.phase.value}; not accepting requests", "unhealthy")
    if serving.batcher.num_in_flight + num_sequences > serving.max_concurrent_requests:
        return error_response(429, "Model is overloaded: --max-concurrent-requests "
                              f"({serving.max_concurrent_requests}) sequences are in flight; retry later",
                              "overloaded")
    return serving


def build_app(state: RouterState) -> FastAPI:
    """The FastAPI application over `state` (filled in by the launcher after warmup)."""
    from textgen_server.router.openai_routes import register_openai_routes  # the routes import this module
    from textgen_server.router.routes_compat import register_compat_routes  # the routes import this module
    from textgen_server.router.routes_tgi import register_tgi_routes  # the routes import this module

    app = FastAPI(title="textgen", description="TGI-compatible text generation server")
    app.add_middleware(PayloadLimit, limit=lambda: state.payload_limit)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": str(error)}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error_response(422, f"invalid request body at `{where}`: {first.get('msg')}", "validation")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        # Starlette's own errors (unknown route, wrong method, unreadable body) in the same shape as ours.
        message = _HTTP_ERROR_HINTS.get(error.status_code, "{detail}").format(
            detail=error.detail, method=request.method, path=request.url.path)
        return error_response(error.status_code, message, _HTTP_ERROR_TYPES.get(error.status_code, "http"))

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(_: Request, error: PayloadTooLarge) -> Response:
        return Response(build_payload_error(None, error.limit), status_code=413, media_type="application/json")

    @app.get("/health", responses={503: ERROR_RESPONSES[503]})
    async def health() -> Response:
        if state.phase is Phase.READY:
            return Response(status_code=200)
        return error_response(503, f"server is {state.phase.value}", "unhealthy")

    app.add_api_route("/ping", health, methods=["GET"], responses={503: ERROR_RESPONSES[503]},
                      summary="SageMaker health check (same as /health)")
    register_tgi_routes(app, state)
    register_openai_routes(app, state)
    register_compat_routes(app, state)  # after the routes it delegates to
    register_metrics(app, state.metrics)
    return app


_T = TypeVar("_T")


async def finish_unless_disconnected(work: asyncio.Future[_T], request: Request) -> bool:
    """Waits for `work` or for the client to go away. On a disconnect `work` is cancelled and False returned."""
    disconnect: asyncio.Future[None] = asyncio.ensure_future(_wait_disconnect(request))
    try:
        waiters: list[asyncio.Future[Any]] = [work, disconnect]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect.cancel()
    if work.done():
        return True
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return False


async def _wait_disconnect(request: Request) -> None:
    # The body is already read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
