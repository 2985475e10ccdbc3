"""SIGTERM on the real launcher: with 20 streams in flight every stream ends with its final event, new requests
get 503 and the process exits 0 within --graceful-termination-timeout; past the timeout it still exits 0."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

pytestmark = pytest.mark.slow

NUM_STREAMS = 20
GRACE_SECONDS = 60.0


class Stream:
    """One /generate_stream request on its own thread, recording (arrival time, event) pairs."""

    def __init__(self, base_url: str, index: int, max_new_tokens: int) -> None:
        self.body = {"inputs": f"Stream {index}: a long story about",
                     "parameters": {"max_new_tokens": max_new_tokens, "ignore_eos_token": True}}
        self.url = f"{base_url}/generate_stream"
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.error: Exception | None = None
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with httpx.stream("POST", self.url, json=self.body, timeout=120) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.events.append((time.monotonic(), json.loads(line[5:])))
        except Exception as error:  # asserted on by the tests
            self.error = error


def _start_streams(server: LauncherProcess, max_new_tokens: int) -> list[Stream]:
    streams = [Stream(server.base_url, i, max_new_tokens) for i in range(NUM_STREAMS)]
    deadline = time.monotonic() + 60
    while not all(stream.events for stream in streams) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(stream.events for stream in streams), "the streams never started"
    return streams


def _during_drain(server: LauncherProcess) -> tuple[int, httpx.Response]:
    time.sleep(0.2)
    health = httpx.get(f"{server.base_url}/health", timeout=5).status_code
    late = httpx.post(f"{server.base_url}/generate", timeout=5, json={"inputs": "late", "parameters": {}})
    return health, late


def test_sigterm_with_20_streams_in_flight(tiny_llama_dir: Path, launch: Launch) -> None:
    server = launch(tiny_llama_dir, "--graceful-termination-timeout", str(GRACE_SECONDS), "--max-total-tokens", "512")
    max_new_tokens = 200
    streams = _start_streams(server, max_new_tokens)
    signalled_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    health, late = _during_drain(server)
    code = server.process.wait(timeout=GRACE_SECONDS + 15)
    exited_after = time.monotonic() - signalled_at
    for stream in streams:
        stream.thread.join(timeout=10)
    assert code == 0, server.log()
    assert exited_after < GRACE_SECONDS
    assert health == 503
    assert late.status_code == 503 and late.json()["error_type"] == "unhealthy"
    for stream in streams:
        assert stream.error is None, f"a stream failed during the drain: {stream.error!r}"
        final = stream.events[-1][1]
        assert final["details"]["finish_reason"] == "length", final
        assert final["details"]["generated_tokens"] == max_new_tokens == len(stream.events)
    assert sum(at > signalled_at for stream in streams for at, _ in stream.events) > NUM_STREAMS, \
        "the work should still have been in flight when the signal came"


def test_drain_timeout_cuts_long_requests_and_still_exits_0(tiny_llama_dir: Path, launch: Launch) -> None:
    grace = 2.0
    server = launch(tiny_llama_dir, "--graceful-termination-timeout", str(grace), "--max-total-tokens", "1024",
                    "--max-input-tokens", "100", "--max-batch-size", "1")
    # One long request at a time (batch size 1): the rest wait in the queue, far from done after 2 s.
    streams = [Stream(server.base_url, i, 900) for i in range(6)]
    deadline = time.monotonic() + 60
    while not streams[0].events and time.monotonic() < deadline:
        time.sleep(0.01)
    signalled_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    health, _ = _during_drain(server)
    code = server.process.wait(timeout=grace + 20)
    assert code == 0, server.log()
    assert time.monotonic() - signalled_at < grace + 10
    assert health == 503
    assert "still running after" in server.log()
    for stream in streams:
        stream.thread.join(timeout=10)
        assert not stream.thread.is_alive(), "a client was left hanging after the server exited"
        assert stream.error is None, stream.error
        if stream.status == 503:  # sent after the signal: refused, as new requests are
            continue
        last = stream.events[-1][1]
        # Finished in time, or told why not: an SSE error event naming the timeout.
        assert "details" in last or "--graceful-termination-timeout" in last["error"], last
    assert any(stream.events and "error" in stream.events[-1][1] for stream in streams), \
        "the grace period should have cut some"
