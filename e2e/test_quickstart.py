"""The README's first command, run as a new user would: `hack/quickstart.sh`, then `hack/quickstart.sh down`.

It brings up its own control plane and node agent (separate state dir and ports, so the session cluster of the
other e2e tests is left alone), installs the chart, runs the operator, applies crds/examples/mistral-7b-nvidia.yaml
(pointed at a tiny model, pinned to the agent's nodes), waits for Ready, and the example's own pod answers a real
generation at its pod IP. Nothing here is mocked; the GPUs are simulated (the node agent's device override).
"""
from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def free_low_ports(count: int) -> list[int]:
    """`count` consecutive free ports on 127.0.0.1 below the kernel's ephemeral range: a listener inside that
    range can find its port taken by any client socket's source port (hack/cluster's defaults avoid it too)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, low - count)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return list(range(first, first + count))
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1 below {low}")


def state_root() -> Path:
    """Where this test keeps the cluster and the quickstart's model: outside /tmp, because every server pod
    mounts an emptyDir at /tmp and would not see the model there (a kubelet's state is not in /tmp either)."""
    cache = Path(os.environ.get("TEXTGEN_CACHE", Path.home() / ".cache" / "textgen"))
    return cache / f"e2e-quickstart-{secrets.token_hex(3)}"


@pytest.mark.timeout(1500)
def test_quickstart_brings_up_a_ready_service_whose_pods_answer_a_generation() -> None:
    root = state_root()
    api, kubelet, etcd, _ = free_low_ports(4)
    env = {
        **os.environ,
        "TEXTGEN_CLUSTER_DIR": str(root / "cluster"),
        "TEXTGEN_CLUSTER_API_PORT": str(api),
        "TEXTGEN_CLUSTER_ETCD_PORT": str(etcd),        # and the next port, etcd's peer port
        "TEXTGEN_CLUSTER_KUBELET_PORT": str(kubelet),  # the node agent's `kubectl logs` endpoint
        # Pod IPs of its own, apart from the session cluster's node agent (127.1.0.0/24).
        "TEXTGEN_CLUSTER_POD_CIDR": "127.9.0.0/24",
        "TEXTGEN_QUICKSTART_DIR": str(root / "quickstart"),
    }
    script = ROOT / "hack" / "quickstart.sh"
    try:
        up = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=1000)
        output = up.stdout + up.stderr
        assert up.returncode == 0, f"hack/quickstart.sh failed ({up.returncode}):\n{output[-6000:]}"
        # What the user is promised: the simulated parts said plainly, a Ready TGS whose own pods run on the
        # agent's GPU-like node with 2 shard processes each, and a real answer from a pod at its pod IP.
        assert "SIMULATED" in output and "TEXTGEN_DEVICE_OVERRIDE=cpu" in output
        assert "device cuda requested (--device cuda) but TEXTGEN_DEVICE_OVERRIDE=cpu" in output  # from the pod
        assert "AllReplicasReady" in output, output[-4000:]
        assert output.count("agent-gpu-0") >= 2, output[-4000:]          # both replicas on the agent's node
        assert output.count("textgen_server.shard --model-path") == 4, output[-4000:]   # 2 replicas x 2 shards
        assert "curl http://127." in output, output[-4000:]              # a loopback pod IP
        assert "generated_text:" in output and "tokens, finish_reason length" in output, output[-4000:]
    finally:
        down = subprocess.run([str(script), "down"], env=env, capture_output=True, text=True, timeout=300)
        leftover = (root / "cluster").exists()
        shutil.rmtree(root, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not leftover, "`hack/quickstart.sh down` left the cluster's state behind"
