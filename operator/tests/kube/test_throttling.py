"""kube.Kube honours the API server's "come back later": HTTP 429 (and 5xx with Retry-After) is waited out for
Retry-After seconds and sent again, for plain requests and for watches.

The server here is a mock of the Kubernetes API server on 127.0.0.1 (aiohttp): only its 429 behaviour matters,
which a real API server shows only in moments that cannot be produced on demand (right after a CRD is
installed its watch cache answers 429 "storage is (re)initializing", Retry-After 1).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import kopf
import pytest
from aiohttp import web

from textgen_operator import kube as kube_module
from textgen_operator.kube import ApiError, Kube, retry_after

PODS = "/api/v1/namespaces/ns/pods"
EVENTS = "/api/v1/events"
THROTTLED = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests", "code": 429,
             "message": "storage is (re)initializing", "details": {"retryAfterSeconds": 1}}


@asynccontextmanager
async def api_server(handler: Callable[[web.Request], Any]) -> AsyncIterator[tuple[Kube, list[web.Request]]]:
    seen: list[web.Request] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return await handler(request)   # type: ignore[no-any-return]

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]
    client = Kube(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", insecure=True))
    try:
        yield client, seen
    finally:
        await client.close()
        await runner.cleanup()


def throttled(retry: str | None = "1") -> web.Response:
    headers = {"Retry-After": retry} if retry is not None else {}
    return web.json_response(THROTTLED, status=429, headers=headers)


@pytest.mark.parametrize("status, header, wait", [
    (429, "1", 1.0), (429, None, 1.0), (429, "0", 0.0), (429, "3600", 30.0),
    (429, "Wed, 21 Oct 2026 07:28:00 GMT", 1.0),
    (503, "2", 2.0), (503, None, None), (500, None, None), (409, "1", None), (200, None, None),
])
def test_retry_after_rule(status: int, header: str | None, wait: float | None) -> None:
    assert retry_after(status, header) == wait


def test_a_get_answered_429_is_sent_again_after_retry_after() -> None:
    async def main() -> None:
        answers = [throttled("1"), web.json_response({"kind": "Pod", "metadata": {"name": "p"}})]

        async def handler(request: web.Request) -> web.Response:
            return answers.pop(0)

        async with api_server(handler) as (client, seen):
            started = time.monotonic()
            pod = await client.get("v1/Pod", "ns", "p")
            assert pod == {"kind": "Pod", "metadata": {"name": "p"}}
            assert len(seen) == 2 and time.monotonic() - started >= 1.0

    asyncio.run(main())


def test_a_create_answered_429_is_sent_again_with_its_body() -> None:
    async def main() -> None:
        bodies: list[Any] = []

        async def handler(request: web.Request) -> web.Response:
            bodies.append(await request.json())
            return throttled("0") if len(bodies) == 1 else web.json_response({}, status=201)

        async with api_server(handler) as (client, _):
            event = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "x.", "namespace": "ns"}}
            await client.create_event(event)
            assert bodies == [event, event]

    asyncio.run(main())


def test_throttling_that_never_ends_becomes_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_module, "MAX_THROTTLED_RETRIES", 2)

    async def main() -> None:
        async def handler(request: web.Request) -> web.Response:
            return throttled("0")

        async with api_server(handler) as (client, seen):
            with pytest.raises(ApiError) as error:
                await client.get("v1/Pod", "ns", "p")
            assert error.value.status == 429 and "storage is (re)initializing" in error.value.message
            assert len(seen) == 3

    asyncio.run(main())


def test_a_server_error_without_retry_after_is_not_retried() -> None:
    async def main() -> None:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({"message": "etcd timeout"}, status=500)

        async with api_server(handler) as (client, seen):
            with pytest.raises(ApiError):
                await client.get("v1/Pod", "ns", "p")
            assert len(seen) == 1

    asyncio.run(main())


def watch_lines(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def event_obj(name: str, rv: str) -> dict[str, Any]:
    return {"kind": "Event", "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def test_follow_waits_out_a_throttled_watch_and_relists_on_410() -> None:
    """As on a fresh cluster: the LIST works, the first WATCH gets 429 "storage is (re)initializing"."""
    async def main() -> None:
        watches: list[dict[str, str]] = []
        lists = 0

        async def handler(request: web.Request) -> web.StreamResponse:
            nonlocal lists
            assert request.path == EVENTS and request.query["fieldSelector"] == "reason=FailedCreate"
            if "watch" not in request.query:
                lists += 1
                return web.json_response({"kind": "EventList", "metadata": {"resourceVersion": str(10 * lists)},
                                          "items": [event_obj(f"listed-{lists}", str(10 * lists))]})
            watches.append(dict(request.query))
            if len(watches) == 1:
                return throttled("1")
            if len(watches) == 2:
                bookmark = {"kind": "Event", "metadata": {"resourceVersion": "15"}}
                body = watch_lines({"type": "ADDED", "object": event_obj("new", "11")},
                                   {"type": "BOOKMARK", "object": bookmark})
                return web.Response(body=body, content_type="application/json")
            if len(watches) == 3:
                gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
                return web.Response(body=watch_lines({"type": "ERROR", "object": gone}),
                                    content_type="application/json")
            await asyncio.sleep(30)
            return web.Response()

        async with api_server(handler) as (client, _):
            got: list[tuple[str, str]] = []
            started = time.monotonic()
            async for kind, obj in client.follow("v1/Event", None, "reason=FailedCreate"):
                got.append((kind, obj.get("metadata", {}).get("name", "")))
                if len(got) == 5:
                    break
            assert got == [("RESET", ""), ("ADDED", "listed-1"), ("ADDED", "new"), ("RESET", ""),
                           ("ADDED", "listed-2")]
            assert time.monotonic() - started >= 1.0, "Retry-After was honoured"
            assert [w["resourceVersion"] for w in watches[:3]] == ["10", "10", "15"], "resumed where it was"
            assert watches[0]["allowWatchBookmarks"] == "true"

    asyncio.run(main())
