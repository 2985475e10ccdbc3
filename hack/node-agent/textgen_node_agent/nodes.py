"""The nodes the agent plays, shaped like the kwok accelerator nodes (hack/cluster.d/nodes.yaml), and their
status and Lease. Pure builders; node_loop.py does the API calls.

Every agent node carries the label and NoSchedule taint `textgen.dev/node-agent=true`: only pods that ask for
real processes (a toleration + nodeSelector) land here, so the kwok-based tests and benchmarks keep their nodes.
"""
from __future__ import annotations

import datetime
import os
import platform
from typing import Any

AGENT_LABEL = "textgen.dev/node-agent"
AGENT_TAINT = {"key": AGENT_LABEL, "value": "true", "effect": "NoSchedule"}
NODE_IP = "127.0.0.1"   # the host the pods run on; the API server dials it only for `kubectl logs`

PROFILES: dict[str, dict[str, Any]] = {
    "nvidia": {
        "labels": {
            "node.kubernetes.io/instance-type": "p5.48xlarge", "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
            "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.family": "hopper",
            "nvidia.com/cuda.driver.major": "570",
        },
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        "resources": {"nvidia.com/gpu": "8", "hugepages-2Mi": "0"},
        "device_override": "cpu",
    },
    "gaudi": {
        "labels": {
            "node.kubernetes.io/instance-type": "hls-gaudi2", "habana.ai/gaudi.present": "true",
            "habana.ai/gaudi.product": "HL-225", "habana.ai/gaudi.family": "gaudi2", "habana.ai/gaudi.count": "8",
        },
        "taints": [{"key": "habana.ai/gaudi", "value": "present", "effect": "NoSchedule"}],
        "resources": {"habana.ai/gaudi": "8", "hugepages-2Mi": "300Gi"},
        "device_override": "cpu",
    },
    "cpu": {"labels": {"node.kubernetes.io/instance-type": "m7i.4xlarge"}, "taints": [], "resources": {},
            "device_override": None},
}
# The capacity a scheduler sees: generous on purpose, the real machine's CPUs are shared by every pod (requests
# are not enforced; see the README).
BASE_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1000Gi"}


def device_override(profile: str) -> str | None:
    """TEXTGEN_DEVICE_OVERRIDE for containers on a node of this profile (None: no override)."""
    value: str | None = PROFILES[profile]["device_override"]
    return value


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_node(name: str, profile: str) -> dict[str, Any]:
    """The Node object of one agent node (metadata and spec; status comes from build_node_status)."""
    shape = PROFILES[profile]
    labels = {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
              "type": "node-agent", AGENT_LABEL: "true", "topology.kubernetes.io/zone": "local-a",
              **shape["labels"]}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {"textgen.dev/node-agent-profile": profile}},
            "spec": {"taints": [dict(t) for t in shape["taints"]] + [dict(AGENT_TAINT)]}}


STARTED_AT = now_rfc3339()   # when this agent started: the conditions' lastTransitionTime


def build_node_status(profile: str, kubelet_port: int = 0, ready: bool = True) -> dict[str, Any]:
    """status of an agent node: capacity, conditions (Ready + no pressure), addresses, nodeInfo."""
    capacity = {**BASE_CAPACITY, **PROFILES[profile]["resources"]}
    now = now_rfc3339()

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": STARTED_AT}

    uname = platform.uname()
    return {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "node agent: not measured"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "node agent: not measured"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "node agent: not measured"),
            condition("Ready", "True" if ready else "False", "KubeletReady" if ready else "KubeletNotReady",
                      "textgen node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE_IP}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kernelVersion": uname.release,
                     "osImage": f"textgen node agent on {uname.system}", "kubeletVersion": "textgen-node-agent",
                     "kubeProxyVersion": "", "containerRuntimeVersion": "local-process://1",
                     "machineID": "", "systemUUID": "", "bootID": str(os.getpid())},
    }


def build_lease(node: str, node_uid: str, duration: int) -> dict[str, Any]:
    """The node's Lease in kube-node-lease, owned by the Node as the kubelet makes it."""
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": duration, "renewTime": now_micro()}}
