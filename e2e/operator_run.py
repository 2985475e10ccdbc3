"""Running the operator in e2e: the chart installed with the real helm, and the operator as a local process that
holds a token of the chart's ServiceAccount (so the chart's RBAC is what it gets). Shared by the cluster-wide
and the namespace-scoped tests."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml

from e2e.harness import REPO_ROOT, Cluster, wait_for

CHART = REPO_ROOT / "charts" / "textgen-operator"


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    metrics_url: str
    log_path: Path

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a counter's samples matching labels, read from the operator's /metrics."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def helm(cluster: Cluster, *args: str) -> str:
    cmd = [str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"`helm {' '.join(args)}` failed: {proc.stderr}")
    return proc.stdout


def install_chart(cluster: Cluster, release: str, namespace: str, *values: str) -> None:
    """helm upgrade --install of charts/textgen-operator, waiting for its Deployment; values are `--set` items."""
    sets = [arg for value in values for arg in ("--set", value)]
    helm(cluster, "upgrade", "--install", release, str(CHART), "--namespace", namespace, "--create-namespace",
         "--wait", "--timeout", "120s", *sets)


def token_kubeconfig(cluster: Cluster, path: Path, service_account: str, namespace: str) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (TokenRequest), not as the admin."""
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    token = core.create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 7200}}).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {"apiVersion": "v1", "kind": "Config",
              "clusters": [{"name": "local", "cluster": server}],
              "users": [{"name": "operator", "user": {"token": token}}],
              "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
              "current-context": "operator"}
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def run_operator(kubeconfig: Path, workdir: Path, *flags: str) -> Iterator[Operator]:
    """`python -m textgen_operator.main` with the given kubeconfig and flags, healthy before the block runs;
    SIGTERM afterwards, and its log tail on stderr."""
    liveness, metrics = free_port(), free_port()
    log_path = workdir / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    # The highest priority, so a stale peer left by an earlier crashed run never pauses this one.
    args = [sys.executable, "-m", "textgen_operator.main", "--peering-priority", "2000000",
            "--liveness-port", str(liveness), "--metrics-port", str(metrics), "--bind-host", "127.0.0.1",
            "--log-format", "json", *flags]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    handle = Operator(process, f"http://127.0.0.1:{metrics}/metrics", log_path)

    def healthy() -> bool:
        assert process.poll() is None, f"operator exited: {log_path.read_text()[-3000:]}"
        try:
            return bool(urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2).status == 200)
        except OSError:
            return False

    try:
        wait_for(healthy, 60, "the operator's /healthz")
        yield handle
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        sys.stderr.write(f"--- operator log tail\n{log_path.read_text()[-4000:]}\n")


@contextmanager
def chart_operator(cluster: Cluster, workdir: Path, release: str = "textgen-operator",
                   namespace: str = "textgen-system") -> Iterator[Operator]:
    """The chart installed by helm, and the operator running locally with the chart's identity (its
    ServiceAccount's token), so what it may do is exactly the chart's RBAC."""
    install_chart(cluster, release, namespace)
    kubeconfig = token_kubeconfig(cluster, workdir / "kubeconfig", release, namespace)
    with run_operator(kubeconfig, workdir, "--peering-name", release, "--blocked-retry-seconds", "2") as handle:
        yield handle


def get_tgs(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "tgs", name, "-n", namespace, "-o", "json").stdout))


def condition(tgs: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in tgs.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def wait_ready(cluster: Cluster, namespace: str, name: str, replicas: int, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        tgs = get_tgs(cluster, namespace, name)
        status = tgs.get("status", {})
        ok = (condition(tgs, "Ready").get("status") == "True" and status.get("readyReplicas") == replicas
              and status.get("updatedReplicas") == replicas
              and status.get("observedGeneration") == tgs["metadata"]["generation"])
        return tgs if ok else None

    return wait_for(ready, timeout, f"TGS {namespace}/{name} Ready with {replicas} replicas")


def tiny(name: str, **spec: Any) -> str:
    body = {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService", "metadata": {"name": name},
            "spec": {"model": {"id": "org/tiny"}, "accelerator": {"type": "nvidia", "count": 1}, **spec}}
    return str(yaml.safe_dump(body))


def permission_errors(log_path: Path) -> list[str]:
    """Lines of an operator log that report a 403 / Forbidden."""
    return [line for line in log_path.read_text().splitlines() if re.search(r"\b403\b|forbidden", line, re.I)]
