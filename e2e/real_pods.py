"""Helpers of the e2e tests whose pods run for real: on the node agent's nodes (hack/node-agent), a pod's
container is a real `textgen-launcher` process with its shard processes, reachable at the pod's IP (a loopback
address 127.1.0.N, so dialling it stays on this machine).

A TGS is pinned to those nodes by `scheduling` (the agent's label and taint), and its model id is pointed at a
tiny random-weight model of the same architecture family, built offline. Devices are the one simulated part: the
agent sets TEXTGEN_DEVICE_OVERRIDE=cpu on its NVIDIA- and Gaudi-like nodes, so `--device cuda|hpu` computes on
the CPU (the launcher logs a WARNING saying so).
"""
from __future__ import annotations

import copy
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import AGENT_NODE_LABEL, REPO_ROOT, Cluster
from e2e.operator_run import Operator, chart_operator

AGENT_LABEL = AGENT_NODE_LABEL     # label and NoSchedule taint of every agent node (hack/node-agent)
ON_AGENT_NODES: dict[str, Any] = {
    "nodeSelector": {AGENT_LABEL: "true"},
    "tolerations": [{"key": AGENT_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}
# Architecture family of each example's model (config.json's model_type); SmolLM2 is a Llama.
ARCH_BY_ORG = {"meta-llama": "llama", "HuggingFaceTB": "llama", "mistralai": "mistral", "Qwen": "qwen2"}
# Head counts every example's shard count divides (1, 2, 8), with grouped-query attention as the real models have;
# positions long enough for the examples' maxTotalTokens (8192).
TINY_DIMS: dict[str, int] = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 16,
                             "num_key_value_heads": 8, "max_position_embeddings": 8192}
SERVER_MODULES = ("textgen-launcher", "textgen_server.shard")
RELEASE, SYSTEM_NS = "textgen-operator", "textgen-system"


def is_server_process(cmdline: str) -> bool:
    """A launcher or shard Python process (not the exec chain that starts a container: nsenter, unshare, sh)."""
    words = cmdline.split()
    return bool(words) and Path(words[0]).name.startswith("python") and any(m in cmdline for m in SERVER_MODULES)


def models_dir() -> Path:
    """Where tiny models are kept: outside /tmp (every server pod mounts an emptyDir there) and readable by the
    pods' runAsUser (1000)."""
    return Path(os.environ.get("TEXTGEN_CACHE", Path.home() / ".cache" / "textgen")) / "e2e-models"


def tiny_model(arch: str, **dims: int) -> Path:
    """A tiny random-weight model of `arch` (built once per arch and dims, then reused); world-readable."""
    spec = {**TINY_DIMS, **dims}
    key = hashlib.sha256(json.dumps([arch, spec], sort_keys=True).encode()).hexdigest()[:10]
    path = models_dir() / f"tiny-{arch}-{key}"
    if not (path / "model.safetensors").is_file():
        code = ("import json, sys; from textgen_server.testing import build_tiny_model; "
                "build_tiny_model(sys.argv[1], arch=sys.argv[2], **json.loads(sys.argv[3]))")
        staging = path.with_name(path.name + f".{os.getpid()}")
        subprocess.run([sys.executable, "-c", code, str(staging), arch, json.dumps(spec)], check=True,
                       capture_output=True, timeout=300)
        staging.rename(path)
    # save_pretrained writes the weights 0600; the pods run as uid 1000.
    path.chmod(0o755)
    for file in path.iterdir():
        file.chmod(0o644)
    return path


def arch_of(model_id: str) -> str:
    org = model_id.split("/", 1)[0]
    if org not in ARCH_BY_ORG:
        raise KeyError(f"no tiny model family known for {model_id!r}: add its organisation to ARCH_BY_ORG")
    return ARCH_BY_ORG[org]


def on_real_pods(body: dict[str, Any], model: Path) -> dict[str, Any]:
    """A TGS body with its model id pointed at `model` and its pods pinned to the agent's nodes; every other
    field as given."""
    out = copy.deepcopy(body)
    out["spec"]["model"]["id"] = str(model)
    scheduling = out["spec"].setdefault("scheduling", {})
    scheduling.setdefault("nodeSelector", {}).update(ON_AGENT_NODES["nodeSelector"])
    scheduling.setdefault("tolerations", []).extend(ON_AGENT_NODES["tolerations"])
    return out


def example_on_real_pods(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the example as written, the example on real pods with a tiny model of its family)."""
    original = yaml.safe_load(path.read_text())
    return original, on_real_pods(original, tiny_model(arch_of(original["spec"]["model"]["id"])))


def pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}",
                          "-o", "json").stdout
    return sorted(json.loads(out)["items"], key=lambda p: p["metadata"]["name"])


def pod_dir(cluster: Cluster, pod: dict[str, Any]) -> Path:
    """The agent's directory of a pod (hack/node-agent/README.md): logs, volumes and its sandbox record."""
    meta = pod["metadata"]
    return cluster.state_dir / "node-agent" / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


def pod_log(cluster: Cluster, pod: dict[str, Any], container: str = "server") -> str:
    """Every log of a container (one file per restart, oldest first): what `kubectl logs` would show."""
    files = sorted((pod_dir(cluster, pod) / container).glob("*.log"), key=lambda f: int(f.stem))
    return "".join(f.read_text(errors="replace") for f in files)


def pod_processes(cluster: Cluster, pod: dict[str, Any]) -> list[tuple[int, str]]:
    """(pid, command line) of the server processes (launcher and shards) in the pod's own network namespace."""
    record = pod_dir(cluster, pod) / "sandbox"
    try:
        inode = int(record.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return []
    return _server_processes(inode)


def _server_processes(inode: int) -> list[tuple[int, str]]:
    """Launchers and shards in one network namespace, without a launcher's fork caught between fork and exec
    (it still shows its parent's command line for a moment while a shard is being spawned)."""
    found = {pid: cmd for pid, cmd in _processes_in_netns(inode) if is_server_process(cmd)}
    return [(pid, cmd) for pid, cmd in found.items() if (parent := _parent_pid(pid)) is None or found.get(parent) != cmd]


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _processes_in_netns(inode: int) -> Iterator[tuple[int, str]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino != inode:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        yield int(entry.name), cmd


def namespace_process_count(cluster: Cluster, namespace: str) -> int:
    """Server processes (launchers and shards) running now in the agent's pods of `namespace`."""
    count = 0
    for record in (cluster.state_dir / "node-agent" / "pods").glob(f"{namespace}_*/sandbox"):
        try:
            inode = int(record.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        count += len(_server_processes(inode))
    return count


def shard_pids(processes: list[tuple[int, str]]) -> list[int]:
    return [pid for pid, cmd in processes if "textgen_server.shard" in cmd]


def launcher_pids(processes: list[tuple[int, str]]) -> list[int]:
    return [pid for pid, cmd in processes if "textgen-launcher" in cmd]


def post_json(ip: str, path: str, body: dict[str, Any], port: int = 80, timeout: float = 120) -> dict[str, Any]:
    """POST to a pod's own address (a loopback pod IP: no proxy, no Service)."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode()
        if response.status != 200:
            raise AssertionError(f"POST http://{ip}:{port}{path} -> {response.status}: {text[:2000]}")
        return dict(json.loads(text))
    finally:
        conn.close()


def generate(ip: str, max_new_tokens: int = 16) -> dict[str, Any]:
    """A real TGI /generate at the pod's address; greedy, EOS ignored, so the token count is exact."""
    body = {"inputs": "The operator reconciles", "parameters": {
        "max_new_tokens": max_new_tokens, "details": True, "ignore_eos_token": True}}
    return post_json(ip, "/generate", body)


def stream_tokens(ip: str, max_new_tokens: int, port: int = 80, timeout: float = 300) -> Iterator[dict[str, Any]]:
    """The events of a TGI /generate_stream at the pod's address, as they arrive."""
    body = {"inputs": "A stream that outlives its pod's deletion", "parameters": {
        "max_new_tokens": max_new_tokens, "ignore_eos_token": True, "details": True}}
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("POST", "/generate_stream", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, f"/generate_stream -> {response.status}: {response.read()[:2000]!r}"
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:"):
                yield dict(json.loads(line[len("data:"):]))
    finally:
        conn.close()


EXAMPLES = sorted((REPO_ROOT / "crds" / "examples").glob("*.yaml"))


class ProcessPeak:
    """The largest number of server processes seen at once in a namespace's pods, sampled twice a second."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace, self.peak = cluster, namespace, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, namespace_process_count(self.cluster, self.namespace))

    def __enter__(self) -> ProcessPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def process_peak(cluster: Cluster, namespace: str, request: pytest.FixtureRequest) -> Iterator[ProcessPeak]:
    """Counts the test's server processes; the peak goes to the terminal and the test's user_properties."""
    with ProcessPeak(cluster, namespace) as peak:
        yield peak
    request.node.user_properties.append(("peak_server_processes", peak.peak))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\n{request.node.nodeid}: at most {peak.peak} server processes at once")


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The chart installed by helm, and the operator running locally with the chart's identity."""
    with chart_operator(cluster, tmp_path_factory.mktemp("operator"), RELEASE, SYSTEM_NS) as handle:
        yield handle
