"""The local metrics pipeline end to end (`hack/cluster metrics up`): a real launcher pod on the node agent that
opts in to scraping, a real Prometheus that finds it through the API server and scrapes it on its loopback pod IP,
and a real prometheus-adapter behind the API server's aggregation layer, read as the HPA controller reads it:
`kubectl get --raw /apis/custom.metrics.k8s.io/v1beta1/namespaces/<ns>/pods/*/tgi_queue_size`. A kwok pod with
the same annotations (a fake 10.244.x IP) is discovered and never dialled."""
from __future__ import annotations

import subprocess
import threading
from typing import Any

import yaml

from e2e.harness import AGENT_NODES, HACK_CLUSTER, Cluster, agent_placement, apply_yaml, wait_for
from e2e.metrics_pipeline import (
    component_pid, custom_pod_metric, metrics_command, metrics_pipeline, prometheus_get, prometheus_query,
    tcp_peers,
)
from e2e.real_pods import stream_tokens, tiny_model
from e2e.test_node_agent_pods import condition, read_pod

__all__ = ["metrics_pipeline"]   # the fixture, used by name below
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "80", "prometheus.io/path": "/metrics"}
TGS_LABEL = "textgen.dev/service"


def server_pod(name: str, model: str) -> dict[str, Any]:
    """A launcher pod as the operator shapes one, with batches of one request: a second request waits in the
    queue, so concurrent streams make tgi_queue_size climb."""
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    container = {
        "name": "server", "image": "ghcr.io/example/textgen-server:cpu", "command": ["textgen-launcher"],
        "args": ["--model-id", model, "--num-shard", "1", "--port", "80", "--hostname", "0.0.0.0",
                 "--device", "cpu", "--max-batch-size", "1"],
        "ports": [{"name": "http", "containerPort": 80}],
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 2},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    security = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": SCRAPE, "labels": {TGS_LABEL: "queue-demo"}},
            "spec": {**agent_placement(AGENT_NODES["cpu"]), "terminationGracePeriodSeconds": 5,
                     "containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}],
                     "securityContext": security}}


def kwok_pod(name: str) -> dict[str, Any]:
    """A pod on a kwok node with the same opt-in: its IP is fake (10.244.x) and must never be scraped."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": SCRAPE, "labels": {TGS_LABEL: "queue-demo"}},
            "spec": {"nodeName": "cpu-0", "containers": [{"name": "server", "image": "example/none"}]}}


def streams(ip: str, count: int, tokens: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=lambda: sum(1 for _ in stream_tokens(ip, tokens)), daemon=True)
               for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_queue_depth_of_a_real_pod_reaches_the_custom_metrics_api(metrics_pipeline: Cluster, namespace: str) -> None:
    cluster = metrics_pipeline
    model = str(tiny_model("llama"))
    apply_yaml(cluster, yaml.safe_dump_all([server_pod("queue-0", model), kwok_pod("fake-0")]), namespace)
    def ready_pod() -> dict[str, Any] | None:
        found = read_pod(cluster, namespace, "queue-0")
        return found if condition(found, "Ready") == "True" else None

    ip = wait_for(ready_pod, 240, "the launcher pod Ready")["status"]["podIP"]

    # Idle: the adapter answers 0 for the pod, read through the aggregation layer.
    assert wait_for(lambda: custom_pod_metric(cluster, namespace, "tgi_queue_size").get("queue-0") == 0, 60,
                    "tgi_queue_size of queue-0 = 0 in custom.metrics.k8s.io")
    # Four streams, batches of one: three wait in the queue; the API shows it within a scrape or two.
    threads = streams(ip, 4, 400)
    peak = wait_for(lambda: (v := custom_pod_metric(cluster, namespace, "tgi_queue_size").get("queue-0", 0)) >= 2
                    and v, 60, "tgi_queue_size of queue-0 >= 2 under 4 concurrent streams")
    for thread in threads:
        thread.join(timeout=300)
    assert wait_for(lambda: custom_pod_metric(cluster, namespace, "tgi_queue_size").get("queue-0") == 0, 60,
                    "tgi_queue_size back to 0 after the streams")
    assert 2 <= peak <= 3, peak

    # The series carries what rules and people need, and only the agent pod's loopback address was scraped.
    series = prometheus_query(f'tgi_queue_size{{namespace="{namespace}"}}')
    assert [s["metric"] for s in series] == [{
        "__name__": "tgi_queue_size", "namespace": namespace, "pod": "queue-0", "node": AGENT_NODES["cpu"],
        "ready": "true", "textgen_dev_service": "queue-demo", "instance": f"{ip}:80", "job": "textgen-pods"}]
    targets = prometheus_get("/api/v1/targets")
    assert all(t["labels"]["instance"].startswith("127.") for t in targets["activeTargets"]), targets
    dropped = [t["discoveredLabels"] for t in targets["droppedTargets"]
               if t["discoveredLabels"].get("__meta_kubernetes_namespace") == namespace]
    assert any(d.get("__meta_kubernetes_pod_name") == "fake-0" and d["__meta_kubernetes_pod_ip"].startswith("10.")
               for d in dropped), dropped


def test_pipeline_processes_dial_only_loopback(metrics_pipeline: Cluster) -> None:
    """Prometheus, the adapter and the API server's hop to the adapter stay on 127.0.0.0/8."""
    cluster = metrics_pipeline
    assert cluster.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta1").returncode == 0
    for name in ("prometheus", "prometheus-adapter", "kube-apiserver"):
        peers = tcp_peers(component_pid(cluster, name))
        assert peers, f"{name} holds no connection"
        assert all(peer.startswith("127.") for peer in peers), (name, peers)


def test_metrics_down_removes_the_apiservices_and_up_restores_them(metrics_pipeline: Cluster) -> None:
    """`down` deletes the APIServices before it stops the adapter: one left without a backend would make API
    discovery incomplete for the whole cluster (namespace deletion and garbage collection stall)."""
    cluster = metrics_pipeline
    assert "Available" in metrics_command("status")
    metrics_command("down")
    try:
        names = cluster.kubectl("get", "apiservices", "-o", "name").stdout
        assert "metrics.k8s.io" not in names, names
        assert cluster.kubectl("api-resources").returncode == 0      # discovery complete, no stale group
        assert "prometheus: not running" in metrics_status()
    finally:
        metrics_command("up")
    assert "Available" in metrics_command("status")
    assert custom_group_served(cluster)


def metrics_status() -> str:
    proc = subprocess.run([str(HACK_CLUSTER), "metrics", "status"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout     # down: status says so and fails
    return proc.stdout


def custom_group_served(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta1", check=False).returncode == 0
