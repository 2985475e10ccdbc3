"""--payload-limit: request bodies larger than the limit get 413 before anything parses them (TGI: 2 MB default).

A pure ASGI middleware: a declared Content-Length over the limit is refused at once; a body without one (chunked)
is counted as it arrives and refused when it crosses the limit, so a client cannot make the server buffer more.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_PAYLOAD_LIMIT = 2_000_000


class PayloadTooLarge(HTTPException):
    """Raised inside `receive` when a chunked body crosses the limit. An HTTPException so that FastAPI's body
    reader passes it on (it turns other exceptions into a 400); the app maps it to the 413 error body."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=build_payload_error(None, limit).decode())
        self.limit = limit


def build_payload_error(size: int | None, limit: int) -> bytes:
    """The 413 body, in the error shape of every other route."""
    given = f"{size} bytes" if size is not None else "more"
    message = (f"Payload too large: the request body is {given}, over --payload-limit ({limit} bytes); send a "
               "shorter prompt, or start the server with a larger --payload-limit")
    return json.dumps({"error": message, "error_type": "payload_too_large"}).encode()


class PayloadLimit:
    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, build_payload_error(declared, limit))
            return
        started = False
        num_bytes = 0

        async def counting_receive() -> Message:
            nonlocal num_bytes
            message = await receive()
            num_bytes += len(message.get("body", b""))
            if num_bytes > limit:
                raise PayloadTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLarge:
            if not started:
                await _send_413(send, build_payload_error(None, limit))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, body: bytes) -> None:
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
