"""Helpers of the end-to-end suite: the local cluster handle, YAML apply, waiting, and failure dumps.

The cluster is the real control plane of `hack/cluster` (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) with kwok simulating the kubelets. Fake node and pod IPs are never dialled: nothing here runs
`kubectl logs/exec/port-forward` or connects anywhere but the API server on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import urllib3
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
HACK_CLUSTER = REPO_ROOT / "hack" / "cluster"
BUILD_TOOLS = REPO_ROOT / "hack" / "build-tools.sh"

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """A running local cluster: where its kubeconfig, tools and audit log are."""

    kubeconfig: Path
    bin_dir: Path
    state_dir: Path

    @property
    def audit_log(self) -> Path:
        """JSON-lines audit log of every write (create/update/patch/delete) at Metadata level."""
        return self.state_dir / "audit.log"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Runs the pinned kubectl against this cluster; raises with kubectl's stderr when it fails and check."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`kubectl {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def api_client(self) -> kubernetes.client.ApiClient:
        """A fresh `kubernetes` client authenticated as the cluster admin; it honours 429 (throttle_aware_client)."""
        return throttle_aware_client(self.kubeconfig)

    def audit_events(self, since: float | None = None) -> list[dict[str, Any]]:
        """The audit log parsed, oldest first; each entry has user.username, verb, objectRef,
        responseStatus.code. With `since` (a time.time()), only requests received from then on. The API server
        rotates the log at 100 MB into audit-<time>.log files: those are read too, so a window is never lost."""
        files = sorted(self.state_dir.glob("audit*.log"), key=lambda f: f.stat().st_mtime)
        if since is not None:
            files = [f for f in files if f.stat().st_mtime >= since]
        events = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
        if since is None:
            return events
        return [e for e in events if _stamp(e["requestReceivedTimestamp"]) >= since]


def throttle_aware_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """A `kubernetes` client that sends a request again when the API server answers 429 Too Many Requests,
    after its Retry-After, as client-go (and so kubectl) does; the python client by itself raises. Right after a
    CRD is installed its storage answers 429 "storage is (re)initializing" for a moment. Read errors are not
    retried (a POST may have landed)."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    config.retries = urllib3.Retry(total=10, connect=3, read=0, redirect=0, other=0, status=10,
                                   status_forcelist=(429,), allowed_methods=None, respect_retry_after_header=True,
                                   backoff_factor=0.5, raise_on_status=False)
    return kubernetes.client.ApiClient(config)


def _stamp(value: str) -> float:
    """An audit timestamp (RFC 3339 with microseconds) as a time.time() value."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_hack_cluster(command: str, state_dir: Path | None = None) -> str:
    """Runs `hack/cluster <command>` and returns its stdout; raises with its stderr when it fails."""
    env = None if state_dir is None else {**os.environ, "TEXTGEN_CLUSTER_DIR": str(state_dir)}
    proc = subprocess.run([str(HACK_CLUSTER), command], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/cluster {command} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def find_bin_dir() -> Path:
    """The pinned tools' directory; raises with the command to run when they are not built."""
    proc = subprocess.run([str(BUILD_TOOLS), "--print-bin-dir"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            "the cluster tools (kube-apiserver, etcd, kwok, ...) are not built. Run `hack/build-tools.sh` "
            "(the first build takes tens of minutes), then rerun the e2e tests."
        )
    return Path(proc.stdout.strip())


def wait_for(predicate: Callable[[], T | None], timeout: float, message: str, interval: float = 0.2) -> T:
    """Polls `predicate` until it returns something truthy and returns that value.

    On timeout raises AssertionError naming `message` ("3 pods Ready") and the predicate's last value, so a
    failure says what was awaited and how far it got. Exceptions from the predicate propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}; last value: {value!r}")
        time.sleep(interval)


def apply_yaml(cluster: Cluster, text_or_path: str | Path, namespace: str) -> list[dict[str, Any]]:
    """Server-side applies YAML (a str of YAML, or a Path to a file) into `namespace`; returns the objects.

    Uses kubectl's server-side apply with field manager `e2e`, so a schema violation fails here with the API
    server's own message (RuntimeError).
    """
    text = text_or_path.read_text() if isinstance(text_or_path, Path) else text_or_path
    proc = cluster.kubectl(
        "apply", "--server-side", "--field-manager=e2e", "-n", namespace, "-o", "json", "-f", "-", input=text
    )
    out = json.loads(proc.stdout)
    return list(out["items"]) if out.get("kind") == "List" else [out]


# Where pods run for real: the node agent's nodes (hack/node-agent) carry this label and a NoSchedule taint of
# the same key, so a pod lands there only with both. Merge into a pod spec: {**spec, **agent_placement(...)}.
AGENT_NODE_LABEL = "textgen.dev/node-agent"
AGENT_NODES = {"nvidia": "agent-gpu-0", "gaudi": "agent-gaudi-0", "cpu": "agent-cpu-0"}


def agent_placement(node: str = "agent-cpu-0") -> dict[str, Any]:
    """nodeSelector + tolerations that put a pod on one node-agent node (its accelerator taint tolerated)."""
    return {"nodeSelector": {AGENT_NODE_LABEL: "true", "kubernetes.io/hostname": node},
            "tolerations": [{"key": AGENT_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"},
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                            {"key": "habana.ai/gaudi", "operator": "Exists", "effect": "NoSchedule"}]}


def new_namespace_name(test_name: str) -> str:
    """A unique, valid namespace name derived from a test name: `e2e-<test>-<random>` (<= 63 chars)."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    return f"e2e-{slug[:48].rstrip('-')}-{secrets.token_hex(3)}"


def dump_namespace(cluster: Cluster, namespace: str) -> str:
    """Text for a failure report: the namespace's events (oldest first) and every object in it, as YAML."""
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name", check=False)
    names = [k for k in kinds.stdout.split() if k not in ("events", "events.events.k8s.io")]
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", "-o", "wide", check=False
    )
    objects = cluster.kubectl("get", ",".join(names), "-n", namespace, "-o", "yaml", check=False)
    parsed = yaml.safe_load(objects.stdout) if objects.returncode == 0 else None
    # Every namespace has these two; they only lengthen the dump.
    boilerplate = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}
    items = [i for i in (parsed or {}).get("items", []) if (i["kind"], i["metadata"]["name"]) not in boilerplate]
    for item in items:  # managedFields are long and say nothing a reader of a failure needs
        item.get("metadata", {}).pop("managedFields", None)
    objects_text = yaml.safe_dump(items, sort_keys=False) if items else objects.stderr
    return (
        f"=== events in {namespace}\n{events.stdout or events.stderr}\n"
        f"=== objects in {namespace} ({len(items)})\n{objects_text}"
        + agent_pod_logs(cluster, namespace)
    )


def agent_pod_logs(cluster: Cluster, namespace: str, num_lines: int = 40) -> str:
    """The last lines of every container log the node agent kept for pods of `namespace` (all restarts)."""
    pods_dir = cluster.state_dir / "node-agent" / "pods"
    parts = []
    for log in sorted(pods_dir.glob(f"{namespace}_*/*/*.log")):
        lines = log.read_text(errors="replace").splitlines()[-num_lines:]
        parts.append(f"=== node-agent log {log.relative_to(pods_dir)} (last {len(lines)} lines)\n" + "\n".join(lines))
    return "\n" + "\n".join(parts) if parts else ""


def missing(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Where `stored` lacks or changed what `sent` has (the API server prunes fields its schema does not know)."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        return [m for key, value in sent.items() for m in missing(value, stored.get(key), f"{path}.{key}")]
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        return [m for i, (a, b) in enumerate(zip(sent, stored)) for m in missing(a, b, f"{path}[{i}]")]
    return [] if sent == stored else [f"{path}: sent {sent!r}, stored {stored!r}"]
