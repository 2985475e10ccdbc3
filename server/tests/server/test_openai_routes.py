"""The OpenAI routes over raw HTTP on the real launcher: SSE framing, `n` and list prompts (index order, merged
streams), echo, limits (--max-client-batch-size, --max-concurrent-requests: 422 when it can never fit, 429 when
busy), malformed bodies in TGI's error shape, and client disconnects cancelling every choice."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

pytestmark = pytest.mark.slow

PROMPTS = ["The quick brown fox", "Bonjour"]
MESSAGES = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "300", "--max-total-tokens", "512",
                             "--max-concurrent-requests", "4", "--max-client-batch-size", "3")


def post(server: LauncherProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing (`data: ` lines separated by blank lines)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = response.text.split("\n\n")
    assert frames[-1] == "" and all(frame.startswith("data: ") for frame in frames[:-1])
    return [frame[len("data: "):] for frame in frames[:-1]]


def test_stream_framing_ends_with_done(server: LauncherProcess) -> None:
    response = post(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 5, "stream": True,
                                                     "temperature": 0})
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" and "usage" not in chunk for chunk in chunks)


def test_n_choices_for_each_listed_prompt_come_in_prompt_major_order(server: LauncherProcess) -> None:
    body = {"prompt": PROMPTS, "n": 2, "max_tokens": 8, "temperature": 0}
    singles = [post(server, "/v1/completions", {**body, "prompt": p, "n": 1}).json()["choices"][0]["text"]
               for p in PROMPTS]
    response = post(server, "/v1/completions", body).json()
    assert [c["index"] for c in response["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in response["choices"]] == [singles[0], singles[0], singles[1], singles[1]]
    streamed: dict[int, str] = {}
    for event in sse_events(post(server, "/v1/completions", {**body, "stream": True}))[:-1]:
        for choice in json.loads(event)["choices"]:
            streamed[choice["index"]] = streamed.get(choice["index"], "") + choice["text"]
    assert streamed == {0: singles[0], 1: singles[0], 2: singles[1], 3: singles[1]}


def test_echo_puts_the_prompt_before_the_completion(server: LauncherProcess) -> None:
    body = {"prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0}
    plain = post(server, "/v1/completions", body).json()["choices"][0]["text"]
    echoed = post(server, "/v1/completions", {**body, "echo": True}).json()["choices"][0]["text"]
    assert echoed == PROMPTS[0] + plain
    events = sse_events(post(server, "/v1/completions", {**body, "echo": True, "stream": True,
                                                         "stream_options": {"include_usage": True}}))
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["text"] == PROMPTS[0]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == echoed
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 6


@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("/v1/completions", {"prompt": ["a", "b", "c", "d"]}, "at most 3 are allowed in one request "
                                                          "(--max-client-batch-size)"),
    ("/v1/completions", {"prompt": ["a", "b"], "n": 3}, "= 6 sequences, more than --max-concurrent-requests (4)"),
    ("/v1/chat/completions", {"messages": MESSAGES, "n": 5}, "more than --max-concurrent-requests (4)"),
    ("/v1/chat/completions", {"messages": "hello"}, "invalid request body at `messages`"),
    ("/v1/chat/completions", {"prompt": "hello"}, "invalid request body at `messages`"),
    ("/v1/chat/completions", {"messages": MESSAGES, "temperature": "hot"}, "invalid request body at `temperature`"),
    ("/v1/completions", {"prompt": ""}, "`prompt` 0 is empty"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 10**9}, "`max_tokens` must be <= 512"),
    # Unknown fields are refused by name, as OpenAI's API does (router/strict_body.py).
    ("/v1/chat/completions", {"messages": MESSAGES, "min_tokens": 4}, "unknown field 'min_tokens'"),
    ("/v1/completions", {"prompt": "x", "max_new_tokens": 4}, "unknown field 'max_new_tokens'"),
])
def test_bad_requests_get_422_in_tgi_error_shape(server: LauncherProcess, path: str, body: dict[str, Any],
                                                 fragment: str) -> None:
    response = post(server, path, body)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error", "error_type"} and response.json()["error_type"] == "validation"
    assert fragment in response.json()["error"]


def test_unknown_null_fields_and_response_only_message_fields_are_accepted(server: LauncherProcess) -> None:
    """null means not set; an assistant message passed back as history carries the SDK's response-only fields."""
    history = [*MESSAGES, {"role": "assistant", "content": "ok", "refusal": None, "annotations": []},
               {"role": "user", "content": "again"}]
    response = post(server, "/v1/chat/completions", {"messages": history, "max_tokens": 2, "min_tokens": None})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


def test_malformed_json_is_422(server: LauncherProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error_type"] == "validation"


def test_choices_beyond_free_slots_get_429_at_once_and_a_disconnect_cancels_every_choice(
        server: LauncherProcess) -> None:
    long_stream = {"messages": MESSAGES, "max_tokens": 400, "ignore_eos": True, "stream": True, "n": 3}

    async def scenario() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            async with client.stream("POST", "/v1/chat/completions", json=long_stream) as stream:
                lines = stream.aiter_lines()
                while not (await anext(lines)).startswith("data: "):
                    pass
                started = time.monotonic()
                overloaded = await client.post("/v1/chat/completions", json={"messages": MESSAGES, "n": 2})
                return overloaded, time.monotonic() - started

    log_before = server.log().count("cancelled by the client")
    overloaded, seconds = asyncio.run(scenario())
    assert overloaded.status_code == 429 and overloaded.json()["error_type"] == "overloaded" and seconds < 5
    deadline = time.monotonic() + 30
    while server.log().count("cancelled by the client") < log_before + 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.log().count("cancelled by the client") == log_before + 3
    # All slots are free again.
    ok = post(server, "/v1/chat/completions", {"messages": MESSAGES, "n": 4, "max_tokens": 3})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 4


def test_models_route(server: LauncherProcess, tiny_llama_dir: Path) -> None:
    body = httpx.get(f"{server.base_url}/v1/models").json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [str(tiny_llama_dir)]
    assert body["data"][0]["object"] == "model" and body["data"][0]["created"] > 0


def test_a_disconnect_cancels_every_choice_of_a_non_streamed_request(server: LauncherProcess) -> None:
    body = {"messages": MESSAGES, "max_tokens": 400, "ignore_eos": True, "n": 2}

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            request = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
            await asyncio.sleep(1.0)
            request.cancel()  # closes the connection mid-request
            await asyncio.gather(request, return_exceptions=True)

    log_before = server.log().count("cancelled by the client")
    asyncio.run(scenario())
    deadline = time.monotonic() + 30
    while server.log().count("cancelled by the client") < log_before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.log().count("cancelled by the client") == log_before + 2
