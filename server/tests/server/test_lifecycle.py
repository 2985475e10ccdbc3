"""Launcher lifecycle with real processes: a dead shard takes the launcher down, SIGTERM drains in-flight work."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_testlib import Launch

pytestmark = pytest.mark.slow


def test_killing_the_shard_makes_the_launcher_exit_nonzero_within_10_s(tiny_llama_dir: Path, launch: Launch,
                                                                       ) -> None:
    server = launch(tiny_llama_dir, wait=False)
    first_answer = _first_health_answer(server.base_url)
    server.wait_healthy()
    # HTTP is up before the model is loaded and warmed up, and says so (Kubernetes' startup probe relies on it).
    assert first_answer == 503
    shard_pids = server.shard_pids()
    assert len(shard_pids) == 1, f"expected one shard child, found {shard_pids}"
    killed_at = time.monotonic()
    os.kill(shard_pids[0], signal.SIGKILL)
    code = server.process.wait(timeout=10)
    assert code != 0
    assert time.monotonic() - killed_at < 10
    assert "shard 0 exited unexpectedly" in server.log()


def test_invalid_flags_exit_2_with_an_actionable_message(tiny_llama_dir: Path, launch: Launch) -> None:
    server = launch(tiny_llama_dir, "--num-shard", "3", wait=False)
    assert server.process.wait(timeout=60) == 2
    assert "model has 4 attention heads, not divisible by --num-shard 3; valid shard counts: 1, 2" in server.log()


def _first_health_answer(base_url: str, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{base_url}/health", timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the launcher never answered HTTP")


def test_sigterm_lets_in_flight_requests_finish_then_exits_0(tiny_llama_dir: Path, launch: Launch) -> None:
    server = launch(tiny_llama_dir, "--graceful-termination-timeout", "60")
    streams = [_Stream(server.base_url, f"Request {i}: once upon a time") for i in range(4)]
    for stream in streams:
        stream.thread.start()
    deadline = time.monotonic() + 30
    while not all(stream.events for stream in streams) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(stream.events for stream in streams), "the requests never started streaming"
    signalled_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    health_during_drain = httpx.get(f"{server.base_url}/health", timeout=5).status_code
    refused = httpx.post(f"{server.base_url}/generate", timeout=5, json={"inputs": "late"})
    for stream in streams:
        stream.thread.join(timeout=60)
    assert server.process.wait(timeout=30) == 0, server.log()
    assert health_during_drain == 503
    assert refused.status_code == 503 and refused.json()["error_type"] == "unhealthy"
    for stream in streams:
        assert stream.error is None, f"a stream failed during the drain: {stream.error!r}"
        final = stream.events[-1][1]
        assert final["details"]["finish_reason"] in ("length", "eos_token"), final
        assert final["details"]["generated_tokens"] == len(stream.events)
    # Work really was in flight: tokens kept coming after the signal.
    assert any(at > signalled_at for stream in streams for at, _ in stream.events)
    assert "draining" in server.log()


class _Stream:
    """One /generate_stream request on its own thread, recording (arrival time, event) pairs."""

    def __init__(self, base_url: str, inputs: str) -> None:
        self.base_url = base_url
        self.inputs = inputs
        self.events: list[tuple[float, dict]] = []
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        body = {"inputs": self.inputs, "parameters": {"max_new_tokens": 500}}
        try:
            with httpx.stream("POST", f"{self.base_url}/generate_stream", json=body, timeout=60) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.events.append((time.monotonic(), json.loads(line[5:])))
        except Exception as error:  # asserted on by the test
            self.error = error
