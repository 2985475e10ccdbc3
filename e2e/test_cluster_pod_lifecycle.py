"""kwok's simulated kubelet: pods warm up for the delay they ask for, and owners' deletion cascades.

Pods go Running (container started, not ready) at once and Ready after the duration in the annotation
kwok.textgen.dev/ready-delay, which models model load + warmup behind a startup probe.
"""

from __future__ import annotations

import time

import kubernetes.client
from kubernetes.client.rest import ApiException

from e2e.harness import Cluster, apply_yaml, wait_for

WARMUP_SECONDS = 4


def read_pod(cluster: Cluster, namespace: str, name: str) -> kubernetes.client.V1Pod:
    return kubernetes.client.CoreV1Api(cluster.api_client()).read_namespaced_pod(name, namespace)


def condition(pod: kubernetes.client.V1Pod, kind: str) -> str | None:
    return next((c.status for c in (pod.status.conditions or []) if c.type == kind), None)


def test_pod_is_running_but_not_ready_until_its_warmup_delay_passes(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, f"""
apiVersion: v1
kind: Pod
metadata:
  name: warming
  annotations: {{kwok.textgen.dev/ready-delay: "{WARMUP_SECONDS}s"}}
spec:
  nodeSelector: {{kubernetes.io/hostname: cpu-0}}
  containers: [{{name: server, image: ghcr.io/example/textgen-server:test}}]
""", namespace)

    running = wait_for(
        lambda: (p := read_pod(cluster, namespace, "warming")).status.phase == "Running" and p, 30, "phase Running"
    )
    running_at = time.monotonic()
    assert condition(running, "Ready") == "False"
    status = running.status.container_statuses[0]
    assert (status.started, status.ready, status.state.running is not None) == (False, False, True)

    wait_for(lambda: condition(read_pod(cluster, namespace, "warming"), "Ready") == "True", 30, "Ready")

    warmup = time.monotonic() - running_at
    # The delay counts from when kwok saw the pod Running, a moment before this test did.
    assert WARMUP_SECONDS - 1.5 <= warmup <= WARMUP_SECONDS + 5, warmup
    ready = read_pod(cluster, namespace, "warming").status.container_statuses[0]
    assert (ready.started, ready.ready) == (True, True)


def pod_names(cluster: Cluster, namespace: str) -> set[str]:
    pods = kubernetes.client.CoreV1Api(cluster.api_client()).list_namespaced_pod(namespace).items
    return {p.metadata.name for p in pods}


def test_deleting_an_owner_garbage_collects_its_children(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: cpu-0}
      containers: [{name: web, image: ghcr.io/example/web:test}]
""", namespace)
    apps = kubernetes.client.AppsV1Api(cluster.api_client())
    wait_for(lambda: len(pod_names(cluster, namespace)) == 2, 30, "2 pods made by the Deployment's ReplicaSet")
    assert len(apps.list_namespaced_replica_set(namespace).items) == 1

    # Background propagation: the API server deletes the Deployment at once; the garbage collector then
    # deletes the ReplicaSet it owned, and the pods that ReplicaSet owned.
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")

    wait_for(lambda: not apps.list_namespaced_replica_set(namespace).items, 30, "the ReplicaSet collected")
    wait_for(lambda: not pod_names(cluster, namespace), 30, "the pods collected")


def test_orphan_propagation_keeps_the_children(cluster: Cluster, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [ref]}})

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Orphan")

    def owner_gone_child_orphaned() -> bool:
        try:
            core.read_namespaced_config_map("owner", namespace)
            return False
        except ApiException as exc:
            if exc.status != 404:
                raise
        return not core.read_namespaced_config_map("child", namespace).metadata.owner_references

    wait_for(owner_gone_child_orphaned, 30, "the owner deleted and the child's ownerReference removed")
