"""The node agent's nodes: shaped like the kwok accelerator nodes, kept alive by Lease renewals, and seen
NotReady by the real node lifecycle controller once their agent stops."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import kubernetes.client
from kubernetes.client.rest import ApiException

from e2e.harness import AGENT_NODE_LABEL, AGENT_NODES, REPO_ROOT, Cluster, wait_for

AGENT_TAINT = (AGENT_NODE_LABEL, "true", "NoSchedule")


def test_agent_nodes_carry_the_accelerator_shape_and_their_own_taint(cluster: Cluster) -> None:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    nodes = {n.metadata.name: n for n in core.list_node(label_selector=f"{AGENT_NODE_LABEL}=true").items}

    assert set(nodes) == set(AGENT_NODES.values())
    gpu, gaudi, cpu = (nodes[AGENT_NODES[k]] for k in ("nvidia", "gaudi", "cpu"))
    taints = {name: {(t.key, t.value, t.effect) for t in node.spec.taints or []} for name, node in nodes.items()}
    assert taints[gpu.metadata.name] == {("nvidia.com/gpu", "present", "NoSchedule"), AGENT_TAINT}
    assert taints[gaudi.metadata.name] == {("habana.ai/gaudi", "present", "NoSchedule"), AGENT_TAINT}
    assert taints[cpu.metadata.name] == {AGENT_TAINT}
    assert gpu.status.allocatable["nvidia.com/gpu"] == "8"
    assert gpu.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert (gaudi.status.allocatable["habana.ai/gaudi"], gaudi.status.allocatable["hugepages-2Mi"]) == ("8", "300Gi")
    assert gaudi.metadata.labels["habana.ai/gaudi.product"] == "HL-225"
    for node in nodes.values():
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True", (node.metadata.name, ready)

    coordination = kubernetes.client.CoordinationV1Api(cluster.api_client())
    renewed = coordination.read_namespaced_lease(cpu.metadata.name, "kube-node-lease").spec.renew_time
    wait_for(lambda: coordination.read_namespaced_lease(cpu.metadata.name, "kube-node-lease").spec.renew_time
             > renewed, 15, "the Lease renewed")


def ready_status(core: kubernetes.client.CoreV1Api, name: str) -> str | None:
    try:
        node = core.read_node(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return next((c.status for c in node.status.conditions or [] if c.type == "Ready"), None)


def test_node_goes_not_ready_when_its_agent_stops(cluster: Cluster, tmp_path: Path) -> None:
    # A node of its own, played by a second agent this test starts and stops: the cluster's agent stays up.
    name = f"agent-lifecycle-{secrets.token_hex(3)}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack" / "node-agent")}
    agent = subprocess.Popen(
        [sys.executable, "-m", "textgen_node_agent", "--kubeconfig", str(cluster.kubeconfig),
         "--state-dir", str(tmp_path), "--node", f"cpu={name}", "--pod-cidr", "127.3.0.0/29",
         "--lease-seconds", "20"], env=env, stdout=(tmp_path / "agent.log").open("w"), stderr=subprocess.STDOUT)
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    try:
        wait_for(lambda: ready_status(core, name) == "True", 30, f"node {name} Ready")
        agent.terminate()
        agent.wait(15)

        # hack/cluster runs the controller-manager with --node-monitor-grace-period=20s.
        wait_for(lambda: ready_status(core, name) == "Unknown", 60, f"node {name} Ready=Unknown")
        node = core.read_node(name)
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.reason == "NodeStatusUnknown", ready
        assert any(t.key == "node.kubernetes.io/unreachable" for t in node.spec.taints or []), node.spec.taints
    finally:
        agent.kill()
        core.delete_node(name)
