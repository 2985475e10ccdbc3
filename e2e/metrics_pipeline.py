"""Helpers of the e2e tests that use the local cluster's metrics pipeline (`hack/cluster metrics up`): a real
Prometheus scraping the node agent's pods on their loopback IPs, and a real prometheus-adapter behind the API
server's aggregation layer (custom.metrics.k8s.io, external.metrics.k8s.io). Everything they dial is on 127.0.0.1
or a loopback pod IP; Prometheus' own port comes from the same settings as hack/cluster's.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes.utils import parse_quantity

from e2e.harness import HACK_CLUSTER, Cluster

ADAPTER_RULES = Path(__file__).resolve().parent.parent / "charts/textgen-operator/files/prometheus-adapter-rules.yaml"


def prometheus_port() -> int:
    """hack/cluster's default: API port - 353 (TEXTGEN_CLUSTER_PROMETHEUS_PORT overrides)."""
    api_port = int(os.environ.get("TEXTGEN_CLUSTER_API_PORT", "26443"))
    return int(os.environ.get("TEXTGEN_CLUSTER_PROMETHEUS_PORT", str(api_port - 353)))


def metrics_command(verb: str) -> str:
    """`hack/cluster metrics VERB`; raises with its output when it fails."""
    proc = subprocess.run([str(HACK_CLUSTER), "metrics", verb], capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/cluster metrics {verb} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def metrics_pipeline(cluster: Cluster) -> Iterator[Cluster]:
    """The metrics pipeline up (started when it is not; left up afterwards, like the cluster)."""
    metrics_command("up")
    yield cluster


def prometheus_get(path: str, **params: str) -> Any:
    """GET Prometheus' HTTP API on 127.0.0.1; returns the `data` of a successful answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus_port()}{path}{query}", timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def prometheus_query(expr: str) -> list[dict[str, Any]]:
    """An instant query: [{"metric": {labels}, "value": [ts, "v"]}, ...]."""
    return list(prometheus_get("/api/v1/query", query=expr)["result"])


def custom_pod_metric(cluster: Cluster, namespace: str, metric: str) -> dict[str, float]:
    """{pod name: value} of a per-pod custom metric, read as the HPA controller reads it (through the API
    server's aggregation layer); {} while the API answers with an error (e.g. no series yet)."""
    path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/{metric}"
    proc = cluster.kubectl("get", "--raw", path, check=False)
    if proc.returncode != 0:
        return {}
    return {item["describedObject"]["name"]: float(parse_quantity(item["value"]))
            for item in json.loads(proc.stdout)["items"]}


def external_metric(cluster: Cluster, namespace: str, metric: str, selector: str = "") -> float | None:
    """The sum of an external metric's values in `namespace` (None while the API answers with an error)."""
    path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
    if selector:
        path += "?" + urllib.parse.urlencode({"labelSelector": selector})
    proc = cluster.kubectl("get", "--raw", path, check=False)
    if proc.returncode != 0:
        return None
    return sum(float(parse_quantity(item["value"])) for item in json.loads(proc.stdout)["items"])


def tcp_peers(pid: int) -> set[str]:
    """Remote addresses of the established TCP connections a process holds (from `ss`)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True,
                         check=True).stdout
    peers = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            peers.add(line.split()[3].rsplit(":", 1)[0].strip("[]"))
    return peers


def component_pid(cluster: Cluster, name: str) -> int:
    """The pid hack/cluster recorded for one of its processes (e.g. prometheus, prometheus-adapter)."""
    return int((cluster.state_dir / "pids" / f"{name}.pid").read_text().strip())


@contextmanager
def scrape_target(cluster: Cluster, name: str, address: str, **labels: str) -> Iterator[Path]:
    """Prometheus' job textgen-operator (file_sd) scrapes `address` (127.0.0.1:PORT, e.g. a host-process
    operator's --metrics-port) while the block runs: <cluster dir>/prometheus-targets/<name>.json, removed after.
    Prometheus notices the file within a second or so (it watches the folder)."""
    folder = cluster.state_dir / "prometheus-targets"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".tmp")    # written whole, then renamed: Prometheus never reads half a file
    tmp.write_text(json.dumps([{"targets": [address], "labels": labels}]))
    tmp.rename(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def reload_prometheus() -> None:
    """POST /-/reload (Prometheus runs with --web.enable-lifecycle): re-reads its config and rule files."""
    request = urllib.request.Request(f"http://127.0.0.1:{prometheus_port()}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200, answer.status
