"""The real controller-manager and scheduler place accelerator workloads on the right fake nodes.

Pods are created by the real StatefulSet controller, bound by the real kube-scheduler (resources, taints,
tolerations, node selectors), and made Running/Ready by kwok's simulated kubelet.
"""

from __future__ import annotations

from typing import Any

import kubernetes.client
import yaml

from e2e.harness import Cluster, apply_yaml, wait_for

GPU_NODES = {"gpu-h100-0", "gpu-h100-1"}
GAUDI_NODES = {"gaudi2-0", "gaudi2-1"}


def build_statefulset(name: str, replicas: int, resources: dict[str, str], node_selector: dict[str, str],
                      toleration_key: str) -> str:
    """YAML of a StatefulSet whose pods request `resources` (as requests and limits) on tainted nodes."""
    spec: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": node_selector,
                    "tolerations": [{"key": toleration_key, "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "server",
                        "image": "ghcr.io/example/textgen-server:test",
                        "resources": {"requests": {"cpu": "4", "memory": "32Gi", **resources},
                                      "limits": {"memory": "32Gi", **resources}},
                    }],
                },
            },
        },
    }
    return str(yaml.safe_dump(spec))


def list_pods(cluster: Cluster, namespace: str, app: str) -> list[kubernetes.client.V1Pod]:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def is_ready(pod: kubernetes.client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def wait_all_ready(cluster: Cluster, namespace: str, app: str, num_pods: int) -> list[kubernetes.client.V1Pod]:
    def ready_pods() -> list[kubernetes.client.V1Pod] | None:
        pods = list_pods(cluster, namespace, app)
        return pods if len(pods) == num_pods and all(is_ready(p) for p in pods) else None

    return wait_for(ready_pods, 60, f"{num_pods} Ready pods of {app}")


def test_gpu_statefulset_lands_on_nvidia_nodes_and_becomes_ready(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, build_statefulset(
        "llm", 3, {"nvidia.com/gpu": "4"}, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "nvidia.com/gpu"
    ), namespace)

    pods = wait_all_ready(cluster, namespace, "llm", 3)

    assert {p.metadata.name for p in pods} == {"llm-0", "llm-1", "llm-2"}
    nodes = [p.spec.node_name for p in pods]
    assert set(nodes) <= GPU_NODES, nodes
    # 3 x 4 GPUs on nodes of 8: the scheduler must have used both GPU nodes.
    assert set(nodes) == GPU_NODES, nodes
    assert all(p.status.phase == "Running" and p.status.pod_ip.startswith("10.244.") for p in pods)
    assert all(p.metadata.owner_references[0].kind == "StatefulSet" for p in pods)


def test_gaudi_statefulset_lands_on_gaudi_nodes(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, build_statefulset(
        "gaudi", 2, {"habana.ai/gaudi": "8", "hugepages-2Mi": "64Gi"}, {"habana.ai/gaudi.product": "HL-225"},
        "habana.ai/gaudi",
    ), namespace)

    pods = wait_all_ready(cluster, namespace, "gaudi", 2)

    # A full node (8 cards) each: one pod per Gaudi node.
    assert sorted(p.spec.node_name for p in pods) == sorted(GAUDI_NODES)


def pod_scheduled_condition(cluster: Cluster, namespace: str, name: str) -> kubernetes.client.V1PodCondition | None:
    pod = kubernetes.client.CoreV1Api(cluster.api_client()).read_namespaced_pod(name, namespace)
    return next((c for c in (pod.status.conditions or []) if c.type == "PodScheduled"), None)


def test_pod_larger_than_any_node_stays_pending_unschedulable(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: too-big}
spec:
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  containers:
  - name: server
    image: ghcr.io/example/textgen-server:test
    resources: {limits: {nvidia.com/gpu: "16"}}
""", namespace)

    cond = wait_for(lambda: pod_scheduled_condition(cluster, namespace, "too-big"), 30, "a PodScheduled condition")

    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in cond.message, cond.message
    pod = kubernetes.client.CoreV1Api(cluster.api_client()).read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_accelerator_pod_without_toleration_is_kept_off_tainted_nodes(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: no-toleration}
spec:
  containers:
  - name: server
    image: ghcr.io/example/textgen-server:test
    resources: {limits: {habana.ai/gaudi: "1"}}
""", namespace)

    cond = wait_for(
        lambda: pod_scheduled_condition(cluster, namespace, "no-toleration"), 30, "a PodScheduled condition"
    )

    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert "untolerated taint" in cond.message and "habana.ai/gaudi" in cond.message, cond.message
