"""Operations around the HTTP app: request ids, structured (JSON) logs, bearer API key, CORS, rejection metrics.

All middleware here is plain ASGI (not Starlette's BaseHTTPMiddleware), so streaming responses pass through
untouched and a handler still sees the client's `http.disconnect` (that is how disconnects cancel requests).
Order, outermost first: CORS (a browser's preflight and a 401 both carry CORS headers) -> request context (id,
access log, rejection metrics) -> API key -> the app.
"""
from __future__ import annotations

import contextvars
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.middleware.cors import CORSMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
# A client's id is echoed into logs and headers: printable ASCII without spaces, bounded, or we make our own.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# As TGI: the probes, metrics and model description stay open when --api-key is set (Kubernetes probes and
# Prometheus carry no token); every other route (generation, tokenize, ...) needs the key.
OPEN_PATHS = frozenset({"/", "/health", "/ping", "/metrics", "/info", "/v1/models", "/openapi.json", "/docs",
                        "/docs/oauth2-redirect", "/redoc"})
# Routes whose requests count in tgi_request_count (TGI counts the generation routes).
GENERATION_PATHS = frozenset({"/", "/generate", "/generate_stream", "/invocations", "/v1/chat/completions",
                              "/v1/completions"})
# Probes are polled every few seconds: logging each would drown the useful lines.
QUIET_PATHS = frozenset({"/health", "/ping", "/metrics"})
_STATUS_ERROR_TYPES = {400: "validation", 401: "unauthorized", 413: "payload_too_large", 422: "validation",
                       429: "overloaded", 503: "unhealthy"}

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_logger = logging.getLogger("textgen_server.router.access")


def current_request_id() -> str | None:
    """The x-request-id of the HTTP request being handled (None outside a request)."""
    return _request_id.get()


@dataclass(frozen=True)
class OpsOptions:
    """The launcher flags this module serves."""

    api_key: str | None = None
    cors_allow_origins: tuple[str, ...] = ()


def choose_request_id(client_value: str | None) -> str:
    """The client's x-request-id when it is safe to log and echo, else a fresh random one."""
    if client_value is not None and _VALID_REQUEST_ID.fullmatch(client_value):
        return client_value
    return uuid.uuid4().hex


def is_authorized(authorization: str | None, api_key: str) -> bool:
    """True for `Authorization: Bearer <api_key>` (scheme case-insensitive, key compared in constant time)."""
    if authorization is None:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def needs_api_key(method: str, path: str) -> bool:
    return not (method in ("GET", "HEAD") and path in OPEN_PATHS)


def error_type_for_status(status: int) -> str | None:
    """TGI's error_type for a rejection answered before the batcher; None for success and generation errors
    (the batcher counts those itself, so they are not counted twice)."""
    if status < 400 or status in (424, 500):
        return None
    return _STATUS_ERROR_TYPES.get(status, "validation" if status < 500 else "unhealthy")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, target (logger), message, request_id, and any extras.

    Log messages never contain prompt text (the router logs ids, counts and timings only)."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "request_id"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "target": record.name, "message": record.getMessage()}
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update({key: value for key, value in vars(record).items() if key not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, json_output: bool) -> None:
    """The process's logging: TGI-like text lines, or JSON lines with --json-output."""
    handler = logging.StreamHandler()
    if json_output:
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def install_ops(app: Any, options: OpsOptions, on_rejected: Callable[[str], None] | None = None) -> None:
    """Adds the middleware stack to a FastAPI/Starlette app (call before the app serves its first request)."""
    if options.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=options.api_key)
    app.add_middleware(RequestContextMiddleware, on_rejected=on_rejected)
    if options.cors_allow_origins:
        # TGI allows GET and POST with Content-Type; Authorization and x-request-id are added so that a browser
        # client can use --api-key and request ids.
        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_allow_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization", REQUEST_ID_HEADER],
                           expose_headers=[REQUEST_ID_HEADER])


class RequestContextMiddleware:
    """Sets the request id (context, response header), logs one access line, counts early rejections."""

    def __init__(self, app: ASGIApp, on_rejected: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.on_rejected = on_rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(_header(scope, REQUEST_ID_HEADER))
        token = _request_id.set(request_id)
        started = time.monotonic()
        status: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                message["headers"] = [*headers, (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
            self._after(scope, status[0] if status else 500, time.monotonic() - started, request_id)

    def _after(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        method, path = scope.get("method", ""), scope.get("path", "")
        error_type = error_type_for_status(status)
        # A 401 never reached the model API (TGI rejects it before its handlers): not a request to count.
        if self.on_rejected is not None and error_type is not None and status != 401 and method == "POST" \
                and path in GENERATION_PATHS:
            self.on_rejected(error_type)
        if path not in QUIET_PATHS:
            access_logger.info("%s %s %d %.3fs", method, path, status, seconds,
                               extra={"request_id": request_id, "method": method, "path": path, "status": status,
                                      "duration_s": round(seconds, 6)})


class ApiKeyMiddleware:
    """--api-key: 401 with TGI's error body unless `Authorization: Bearer <key>`; probes and metrics stay open."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_api_key(scope.get("method", ""), scope.get("path", "")) \
                or is_authorized(_header(scope, "authorization"), self.api_key):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "Unauthorized: send the API key as `Authorization: Bearer <key>` (the server "
                           "was started with --api-key)", "error_type": "unauthorized"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


def parse_origins(values: Sequence[str]) -> tuple[str, ...]:
    """--cors-allow-origin values (repeatable, each possibly a comma list) -> the origins, blanks dropped."""
    return tuple(origin.strip() for value in values for origin in value.split(",") if origin.strip())


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None
