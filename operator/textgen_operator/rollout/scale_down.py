"""A lower replica count waits while a pod warms: the scale-down policy of an autoscaled TGS. Pure.

While a pod is warming (Running, not Ready, its startup probe not passed yet, for less than
spec.rollout.warmupTimeoutSeconds since its containers (re)started: a new pod after a scale-up, a pod of a
rollout step, a container running again after a crash) the Ready pods carry its share of the load. Stopping one of them then
drops capacity a second time, the queue grows, and the HPA asks for the pod back, which costs a whole warmup. So
when spec.autoscaling is on and spec.replicas goes DOWN, the StatefulSet keeps the count it runs until no pod is
warming; then the lower count is applied, and the rollout deletes no pod in that same step (a deleted pod comes
back warming while the scale-down stops others).

Deferring a removal adds no pod: the StatefulSet keeps what it runs, so rollout's bound "never above
spec.replicas + maxSurge" (counting the replicas it runs) holds. It cannot deadlock: a pod is warming for at most
warmupTimeoutSeconds, and a rollout has a step where every pod is Ready (its surge pod became Ready, the next old
pod is not deleted yet: the scale-down is applied in that step).

Not deferred: a scale to 0 (someone stops the service; the HPA itself never writes 0), and a TGS without
spec.autoscaling (a person or GitOps lowering spec.replicas means it now).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textgen_operator.names import Body
from textgen_operator.pod_health import parse_time, pod_is_ready


@dataclass(frozen=True)
class WarmingPod:
    name: str
    seconds: float      # since its containers (re)started


@dataclass(frozen=True)
class ScaleDecision:
    """The spec.replicas the rollout planner works with this step, and why it differs from the spec's."""

    replicas: int                       # what the StatefulSet is planned for (spec.replicas, or the deferred one)
    requested: int                      # the TGS's spec.replicas (the HPA's or a person's)
    warming: WarmingPod | None = None   # set while a lower count is deferred: the pod it waits for
    lowered: bool = False               # the count goes down in this step: no rollout deletion in it
    recheck_seconds: float | None = None    # when the warming pod's warmup timeout falls due

    @property
    def deferred(self) -> bool:
        return self.warming is not None

    def message(self, timeout: int) -> str:
        if self.warming is None:
            return ""
        return (f"spec.replicas={self.requested} is deferred, the StatefulSet keeps {self.replicas}: pod "
                f"{self.warming.name} is warming ({self.warming.seconds:.0f} s of at most {timeout} s, "
                "spec.rollout.warmupTimeoutSeconds) and no pod stops while another warms")


def _loading(pod: Body) -> bool:
    """Running, not leaving, not Ready, every container running and one of them not past its startup probe:
    loading or warming up. Unlike status.warmingReplicas (pod_health.is_warming) a container running again after
    a crash counts: it may well come back, and until it fails again (back-off: not running) it is capacity on
    its way. A pod waiting in a back-off or a config error is not loading anything."""
    status = pod.get("status", {})
    statuses = status.get("containerStatuses", [])
    return (status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
            and not pod_is_ready(pod) and bool(statuses) and all("running" in s.get("state", {}) for s in statuses)
            and any(not s.get("started") for s in statuses))


def warming_pods(pods: Sequence[Body], now: float) -> tuple[WarmingPod, ...]:
    """The pods loading or warming up, with seconds since their latest container (re)start."""
    found = []
    for pod in pods:
        if not _loading(pod):
            continue
        starts = [parse_time(s.get("state", {}).get("running", {}).get("startedAt"))
                  for s in pod.get("status", {}).get("containerStatuses", [])]
        known = [t.timestamp() for t in starts if t is not None]
        found.append(WarmingPod(pod["metadata"]["name"], max(0.0, now - max(known)) if known else 0.0))
    return tuple(sorted(found, key=lambda p: p.name))


def decide_scale(requested: int, running: int | None, autoscaling: bool, warming: Sequence[WarmingPod],
                 timeout: int) -> ScaleDecision:
    """requested: the TGS's spec.replicas; running: the spec.replicas the StatefulSet was last planned for (None:
    unknown, e.g. created just now or by an older operator); warming: the warming pods; timeout: the warmup
    timeout, after which a pod no longer defers anything (it is failing, and the rollout's business)."""
    if running is None or requested >= running:
        return ScaleDecision(requested, requested)
    still = [p for p in warming if p.seconds < timeout]
    if not autoscaling or requested == 0 or not still:
        return ScaleDecision(requested, requested, lowered=True)
    first = min(still, key=lambda p: (-p.seconds, p.name))       # the one closest to Ready or to its timeout
    return ScaleDecision(running, requested, warming=first,
                         recheck_seconds=max(1.0, min(timeout - p.seconds for p in still) + 1.0))
