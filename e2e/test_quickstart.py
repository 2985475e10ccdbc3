"""The README's first command, run as a new user would: `hack/quickstart.sh`, then `hack/quickstart.sh down`.

It brings up its own control plane (separate state dir and ports, so the session cluster of the other e2e tests is
left alone), installs the chart, runs the operator, waits for the example TextGenerationService to become Ready
and asks textgen-launcher for a real generation. Nothing here is mocked.
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port whose successor is free too (etcd takes its client port and the next one)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def test_quickstart_brings_up_a_ready_service_and_answers_a_generation(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TEXTGEN_CLUSTER_DIR": str(tmp_path / "cluster"),
        "TEXTGEN_CLUSTER_API_PORT": str(free_port()),
        "TEXTGEN_CLUSTER_ETCD_PORT": str(free_port_pair()),
        "TEXTGEN_QUICKSTART_PORT": str(free_port()),
        "TEXTGEN_QUICKSTART_DIR": str(tmp_path / "quickstart"),
    }
    script = ROOT / "hack" / "quickstart.sh"
    try:
        up = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=900)
        output = up.stdout + up.stderr
        assert up.returncode == 0, f"hack/quickstart.sh failed ({up.returncode}):\n{output[-6000:]}"
        # What the user is promised: simulated nodes said plainly, a Ready TGS on GPU nodes, a real answer.
        assert "SIMULATED" in output
        assert "AllReplicasReady" in output, output[-4000:]
        assert "gpu-h100-" in output, output[-4000:]
        assert "generated_text:" in output and "tokens, finish_reason length" in output, output[-4000:]
    finally:
        down = subprocess.run([str(script), "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (tmp_path / "cluster").exists(), "`hack/quickstart.sh down` left the cluster's state behind"
