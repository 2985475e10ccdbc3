"""Garbage in, actionable 4xx out, against the real launcher: malformed JSON, wrong types, NaN and negative
temperature, huge max_new_tokens, invalid UTF-8, empty inputs, bodies over --payload-limit (413), and overload:
3x --max-concurrent-requests in parallel, the excess get 429 at once, the rest complete."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

pytestmark = pytest.mark.slow

MAX_CONCURRENT = 4
PAYLOAD_LIMIT = 4000


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "100", "--max-total-tokens", "512",
                             "--max-concurrent-requests", str(MAX_CONCURRENT), "--payload-limit", str(PAYLOAD_LIMIT))


def post_raw(server: LauncherProcess, content: bytes | Iterator[bytes], path: str = "/generate") -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", content=content, timeout=60,
                      headers={"content-type": "application/json"})


@pytest.mark.parametrize(("content", "status", "fragments"), [
    (b'{"inputs": "hi", "parameters": {', 422, ["JSON decode error"]),
    (b'{"inputs": 5}', 422, ["`inputs`", "valid string"]),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": "many"}}', 422, ["`parameters.max_new_tokens`"]),
    (b'{"inputs": "hi", "parameters": {"temperature": NaN}}', 422, ["`temperature` must be a finite number"]),
    (b'{"inputs": "hi", "parameters": {"temperature": -1.0}}', 422, ["`temperature` must be strictly positive",
                                                                    "-1.0"]),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": 100000000000}}', 422, ["--max-total-tokens",
                                                                               "lower max_new_tokens"]),
    (b'{"inputs": "\xff\xfe hi"}', 400, ["send JSON encoded as UTF-8"]),
    (b'{"inputs": ""}', 422, ["`inputs` cannot be empty"]),
    (b'{"parameters": {}}', 422, ["`inputs`", "required"]),
    (b'[1, 2]', 422, ["invalid request body"]),
    # Unknown fields are refused by name, not dropped (router/strict_body.py): a typo must not change the answer.
    (b'{"inputs": "hi", "parameters": {"max_new_token": 5}}', 422, ["`parameters`", "unknown field 'max_new_token'",
                                                                   "remove it", "max_new_tokens"]),
    (b'{"inputs": "hi", "params": {}, "options": {"wait": true}}', 422, ["unknown fields 'options', 'params'"]),
])
def test_bad_bodies_get_4xx_with_an_actionable_message(server: LauncherProcess, content: bytes, status: int,
                                                       fragments: list[str]) -> None:
    response = post_raw(server, content)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == "validation"
    assert all(fragment in body["error"] for fragment in fragments), body["error"]


def test_unknown_fields_sent_as_null_mean_not_set(server: LauncherProcess) -> None:
    """Clients that serialize every parameter they know send null for the ones not set: accepted."""
    response = post_raw(server, b'{"inputs": "hi", "parameters": {"max_new_tokens": 2, "adapter": null}, '
                                b'"options": null}')
    assert response.status_code == 200, response.text
    assert response.json()["generated_text"] != ""


def test_body_over_payload_limit_is_413_declared_or_chunked(server: LauncherProcess) -> None:
    big = b'{"inputs": "' + b"a" * PAYLOAD_LIMIT + b'"}'
    declared = post_raw(server, big)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count what arrives
        yield from (big[i:i + 1000] for i in range(0, len(big), 1000))

    chunked = post_raw(server, chunks())
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert response.json()["error_type"] == "payload_too_large"
        assert f"--payload-limit ({PAYLOAD_LIMIT} bytes)" in response.json()["error"]
    assert post_raw(server, b'{"inputs": "still serving", "parameters": {"max_new_tokens": 2}}').status_code == 200


def test_overload_excess_gets_429_at_once_and_the_rest_complete(server: LauncherProcess) -> None:
    body: dict[str, Any] = {"inputs": "overload", "parameters": {"max_new_tokens": 300, "ignore_eos_token": True}}

    async def one(client: httpx.AsyncClient) -> tuple[int, float, str]:
        started = time.monotonic()
        response = await client.post("/generate", json=body)
        return response.status_code, time.monotonic() - started, response.text

    async def burst() -> list[tuple[int, float, str]]:
        limits = httpx.Limits(max_connections=3 * MAX_CONCURRENT)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as client:
            return list(await asyncio.wait_for(asyncio.gather(*(one(client) for _ in range(3 * MAX_CONCURRENT))),
                                               timeout=120))

    results = asyncio.run(burst())
    served = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] == 429]
    assert len(served) == MAX_CONCURRENT and len(rejected) == 2 * MAX_CONCURRENT, [r[:2] for r in results]
    slowest_served = min(seconds for _, seconds, _ in served)
    # "At once": every 429 came back before any admitted request finished its 300 tokens.
    assert all(seconds < slowest_served for _, seconds, _ in rejected), [r[:2] for r in results]
    assert all('"error_type":"overloaded"' in text.replace(" ", "") for _, _, text in rejected)


@pytest.mark.parametrize(("parameters", "fragment"), [
    ({"decoder_input_details": True, "details": True}, "`decoder_input_details` == true is not supported"),
    ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not allowed"),
])
def test_stream_only_refusals_are_422_before_any_event(server: LauncherProcess, parameters: dict[str, object],
                                                       fragment: str) -> None:
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 2, **parameters}}
    response = httpx.post(f"{server.base_url}/generate_stream", json=body, timeout=60)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]
