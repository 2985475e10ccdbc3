"""Tensor-parallel failures with real processes: a rank killed or hung mid-generation takes every rank and the
launcher down within 10 s (non-zero exit, no process left); impossible shard counts and devices are refused with
a message before any weight loads; the development device override warns and reports the real device."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from server_testlib import LauncherProcess
from tp_testlib import tp_flags

pytestmark = pytest.mark.slow


def _stream_forever(base_url: str, events: list[dict], stop: threading.Event) -> None:
    body = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 900, "ignore_eos_token": True}}
    try:
        with httpx.stream("POST", f"{base_url}/generate_stream", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                if stop.is_set():
                    return
    except httpx.HTTPError:
        pass  # the server going away is what the test causes


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _break_a_rank_mid_generation(server: LauncherProcess, sig: signal.Signals) -> float:
    """Sends `sig` to rank 1 while a stream is generating; returns the seconds until the launcher exited."""
    shard_pids = server.shard_pids()
    assert len(shard_pids) == 2, f"expected two ranks, found {shard_pids}"
    events: list[dict] = []
    stop = threading.Event()
    thread = threading.Thread(target=_stream_forever, args=(server.base_url, events, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while len(events) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(events) >= 5, "generation never started"
    rank1 = max(shard_pids)  # spawned second
    broken_at = time.monotonic()
    os.kill(rank1, sig)
    try:
        code = server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(rank1, signal.SIGKILL)
        raise AssertionError(f"the launcher was still running 15 s after {sig.name}:\n{server.log()}") from None
    elapsed = time.monotonic() - broken_at
    stop.set()
    assert code != 0, server.log()
    thread.join(timeout=5)
    # The client hears why its stream ended (TGI's last-event error), rather than a connection cut mid-stream.
    assert events and events[-1].get("error"), \
        f"last events: {events[-3:]}\n{server.log()}"
    time.sleep(0.5)
    left = [pid for pid in shard_pids if _alive(pid)]
    for pid in left:  # never leave a stopped process behind, even when the assertion fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"ranks {left} outlived the launcher"
    return elapsed


def test_a_killed_rank_stops_every_rank_and_the_launcher_within_10_s(tp_model_dir, module_launch) -> None:
    server = module_launch(tp_model_dir("llama"), *tp_flags(2))
    elapsed = _break_a_rank_mid_generation(server, signal.SIGKILL)
    assert elapsed < 10, f"the launcher took {elapsed:.1f} s\n{server.log()}"
    # Whichever the launcher noticed first: the rank's exit, or the step that failed with it.
    assert ("shard 1 exited unexpectedly" in server.log()
            or "the batching loop stopped after a shard failure" in server.log()), server.log()


def test_a_hung_rank_times_out_its_collective_and_everything_stops_within_10_s(tp_model_dir, module_launch) -> None:
    server = module_launch(tp_model_dir("llama"), *tp_flags(2))
    elapsed = _break_a_rank_mid_generation(server, signal.SIGSTOP)  # rank 1 stops answering, mid-collective
    assert elapsed < 10, f"the launcher took {elapsed:.1f} s\n{server.log()}"


def test_heads_that_do_not_divide_are_refused_before_any_weight_loads(tp_model_dir, module_launch) -> None:
    server = module_launch(tp_model_dir("llama"), *tp_flags(3), wait=False)
    assert server.process.wait(timeout=60) == 2
    log = server.log()
    assert "model has 8 attention heads, not divisible by --num-shard 3; valid shard counts: 1, 2, 4" in log
    assert "starting shard" not in log


def test_a_missing_device_is_an_error_never_a_cpu_fallback(tp_model_dir, module_launch) -> None:
    server = module_launch(tp_model_dir("llama"), "--device", "hpu", "--max-batch-size", "4", wait=False)
    assert server.process.wait(timeout=120) == 1     # the shard fails to start: no Habana stack on this machine
    assert "device hpu requested (--device hpu) but the Habana stack is not installed" in server.log()
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is served, not refused")
    server = module_launch(tp_model_dir("llama"), "--device", "cuda", wait=False)
    assert server.process.wait(timeout=120) == 1
    assert "device cuda requested (--device cuda) but torch.cuda.is_available() is False" in server.log()


def test_the_development_override_computes_on_the_cpu_and_says_so(tp_model_dir, module_launch,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTGEN_DEVICE_OVERRIDE", "cpu")
    server = module_launch(tp_model_dir("llama"), "--device", "cuda", "--num-shard", "2", "--master-port",
                           tp_flags(2)[3])
    info = httpx.get(f"{server.base_url}/info", timeout=10).json()
    assert (info["model_device_type"], info["num_shard"]) == ("cpu", 2)
    assert ("WARNING textgen_server.launcher: device cuda requested (--device cuda) but TEXTGEN_DEVICE_OVERRIDE=cpu: "
            "computing on cpu") in server.log()
    answer = httpx.post(f"{server.base_url}/generate", timeout=60,
                        json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    assert answer.status_code == 200
    assert server.stop() == 0


def test_a_second_launch_on_the_same_master_port_fails_alone(tp_model_dir, module_launch) -> None:
    flags = tp_flags(2)
    first = module_launch(tp_model_dir("llama"), *flags)
    second = module_launch(tp_model_dir("llama"), *flags, wait=False)
    assert second.process.wait(timeout=120) != 0
    assert f"could not meet the others at localhost:{flags[3]}" in second.log()
    # The first launch's group was not joined by the second's ranks: it still serves.
    answer = httpx.post(f"{first.base_url}/generate", timeout=60,
                        json={"inputs": "Hello", "parameters": {"max_new_tokens": 5}})
    assert answer.status_code == 200, first.log()
    assert first.stop() == 0
