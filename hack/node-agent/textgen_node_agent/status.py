"""pod.status from the containers' statuses, as the kubelet computes it (phase, conditions). Pure."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textgen_node_agent.nodes import NODE_IP


def build_phase(restart_policy: str, statuses: Sequence[Mapping[str, Any]]) -> str:
    """The kubelet's getPhase for pods without init containers."""
    num_running = num_waiting = num_succeeded = num_failed = num_stopped = 0
    for status in statuses:
        state = status["state"]
        if "running" in state:
            num_running += 1
        elif "terminated" in state:
            num_stopped += 1
            num_succeeded += state["terminated"]["exitCode"] == 0
            num_failed += state["terminated"]["exitCode"] != 0
        elif status.get("lastState", {}).get("terminated"):
            num_stopped += 1       # waiting to restart after an exit
        else:
            num_waiting += 1
    if num_waiting:
        return "Pending"
    if num_running:
        return "Running"
    if num_stopped == len(statuses):
        if restart_policy == "Always":
            return "Running"
        if num_failed and restart_policy == "Never":
            return "Failed"
        if num_succeeded == len(statuses):
            return "Succeeded"
        return "Running"
    return "Pending"


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    """A condition; lastTransitionTime is filled in by the pod worker, which knows when it changed."""
    condition: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
    if not ok and reason:
        condition.update(reason=reason, message=message)
    return condition


def build_pod_status(pod: Mapping[str, Any], statuses: list[dict[str, Any]], pod_ip: str | None,
                     start_time: str | None) -> dict[str, Any]:
    """The status the agent posts."""
    phase = build_phase(pod["spec"].get("restartPolicy", "Always"), statuses)
    not_ready = sorted(s["name"] for s in statuses if not s["ready"])
    ready = not not_ready and phase == "Running"
    message = f"containers with unready status: [{' '.join(not_ready)}]"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            _condition("PodReadyToStartContainers", pod_ip is not None),
            _condition("Initialized", True),
            _condition("Ready", ready, "ContainersNotReady" if not_ready else "PodCompleted", message),
            _condition("ContainersReady", ready, "ContainersNotReady" if not_ready else "PodCompleted",
                       message),
            _condition("PodScheduled", True),
        ],
        "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
        "containerStatuses": statuses,
        "startTime": start_time,
    }
    if pod_ip:
        status.update(podIP=pod_ip, podIPs=[{"ip": pod_ip}])
    return status
