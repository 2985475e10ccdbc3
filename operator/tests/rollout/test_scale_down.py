"""A lower spec.replicas waits while a pod warms (autoscaled TGS): the policy table, the warming pods read from
bodies, and whole steps from Kubernetes bodies, alone and in the middle of a rollout (no cluster)."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from textgen_operator.builders import build_desired
from textgen_operator.config import OperatorConfig
from textgen_operator.names import ANNOTATION_TEMPLATE_HASH
from textgen_operator.rollout.model import PodView, Recorded, RolloutInput, RolloutSpec
from textgen_operator.rollout.planner import plan_rollout
from textgen_operator.rollout.scale_down import WarmingPod, decide_scale, warming_pods
from textgen_operator.rollout.statefulset import SPEC_REPLICAS, read_recorded
from textgen_operator.rollout.step import Step, plan_step
from textgen_operator.status import build_status, build_transitions

CONFIG = OperatorConfig()
NOW = 1_800_000_000.0          # 2027-01-15T08:00:00Z
CREATED = "2027-01-15T08:00:00Z"
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 4}
W = WarmingPod

# (case, requested, running, autoscaling, warming, timeout) -> (replicas, deferred by, lowered in this step)
TABLE = [
    ("steady", 3, 3, True, [], 600, (3, None, False)),
    ("scale-up while a pod warms: at once", 4, 3, True, [W("p-2", 10)], 600, (4, None, False)),
    ("scale-down, nothing warming: at once", 1, 3, True, [], 600, (1, None, True)),
    ("scale-down while a pod warms: deferred", 1, 3, True, [W("p-0", 10)], 600, (3, "p-0", False)),
    ("the pod warming longest is named", 2, 3, True, [W("p-1", 5), W("p-2", 50)], 600, (3, "p-2", False)),
    ("past its warmup timeout it defers nothing", 1, 3, True, [W("p-0", 601)], 600, (1, None, True)),
    ("without spec.autoscaling: at once", 1, 3, False, [W("p-0", 10)], 600, (1, None, True)),
    ("a scale to 0 stops the service: at once", 0, 3, True, [W("p-0", 10)], 600, (0, None, True)),
    ("unknown running count (new, or an older operator's StatefulSet)", 1, None, True, [W("p-0", 10)], 600,
     (1, None, False)),
]


@pytest.mark.parametrize(("case", "requested", "running", "autoscaling", "warming", "timeout", "expected"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_decide_scale(case: str, requested: int, running: int | None, autoscaling: bool, warming: list[WarmingPod],
                      timeout: int, expected: tuple[int, str | None, bool]) -> None:
    decision = decide_scale(requested, running, autoscaling, warming, timeout)
    assert (decision.replicas, decision.warming.name if decision.warming else None, decision.lowered) == expected
    assert decision.requested == requested
    if decision.deferred:
        assert decision.recheck_seconds == timeout - max(p.seconds for p in warming) + 1
        assert f"pod {expected[1]} is warming" in decision.message(timeout)


def pod_body(name: str, revision: str, ready: bool, started: str | None = CREATED, **meta: Any) -> dict[str, Any]:
    """A pod as kwok or the kubelet reports it: Running; warming = not started, not ready."""
    state = {"running": {"startedAt": started}} if started else {"waiting": {"reason": "ContainerCreating"}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "uid": f"{name}-{revision}", "namespace": "ns", "creationTimestamp": CREATED,
                         "annotations": {ANNOTATION_TEMPLATE_HASH: revision}, **meta},
            "status": {"phase": "Running" if started else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "server", "ready": ready, "started": ready,
                                              "restartCount": 0, "state": state}]}}


def test_warming_pods_are_running_unready_not_started_and_not_leaving() -> None:
    restarted = pod_body("demo-4", "r", ready=False, started="2027-01-15T08:00:30Z")
    restarted["status"]["containerStatuses"][0].update(
        {"restartCount": 1, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}})
    backoff = pod_body("demo-5", "r", ready=False)
    backoff["status"]["containerStatuses"][0].update(
        {"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}})
    pods = [pod_body("demo-0", "r", ready=True), pod_body("demo-1", "r", ready=False),
            pod_body("demo-2", "r", ready=False, started=None),      # Pending: may never be scheduled
            pod_body("demo-3", "r", ready=False, deletionTimestamp=CREATED), restarted, backoff]
    # A container running again after a crash is warming since its restart; one in back-off is not.
    assert warming_pods(pods, NOW + 42) == (WarmingPod("demo-1", 42.0), WarmingPod("demo-4", 12.0))


def test_no_rollout_deletion_in_the_step_that_lowers_the_count() -> None:
    pods = tuple(PodView(f"demo-{i}", f"u{i}", i, "old" if i < 3 else "new", True, False, 100.0) for i in range(4))
    rec = Recorded(template_revision="new", replicas=4, observed=True, good_revision="old")
    inp = RolloutInput(RolloutSpec(replicas=1), "new", rec, pods, NOW)
    assert [p.name for p in plan_rollout(inp).delete] == ["demo-0"]
    held = plan_rollout(RolloutInput(RolloutSpec(replicas=1), "new", rec, pods, NOW, scaling_down=True))
    assert held.delete == () and held.replicas == 2


class Cluster:
    """The StatefulSet and pods between steps, moved as the StatefulSet controller would (OnDelete)."""

    def __init__(self, tgs: dict[str, Any]) -> None:
        self.tgs, self.generation = tgs, 0
        self.sts: dict[str, Any] = {}        # none yet
        self.pods: dict[int, dict[str, Any]] = {}

    def step(self, now: float = NOW) -> Step:
        step = plan_step(self.tgs, build_desired(self.tgs, CONFIG), self.sts or None, list(self.pods.values()), now)
        sts = copy.deepcopy(next(o for o in step.desired if o["kind"] == "StatefulSet"))
        self.generation += 1
        sts["metadata"].update({"generation": self.generation, "uid": "sts-uid"})
        sts["status"] = {"observedGeneration": self.generation}
        self.sts = sts
        for gone in step.plan.delete:
            del self.pods[int(gone.name.rsplit("-", 1)[1])]
        for ordinal in [o for o in self.pods if o >= sts["spec"]["replicas"]]:
            del self.pods[ordinal]
        return step

    def create_missing(self, ready: bool = False) -> None:
        revision = self.sts["spec"]["template"]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
        for ordinal in range(self.sts["spec"]["replicas"]):
            self.pods.setdefault(ordinal, pod_body(f"demo-{ordinal}", revision, ready=ready))

    def make_ready(self, ordinal: int) -> None:
        revision = self.pods[ordinal]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
        self.pods[ordinal] = pod_body(f"demo-{ordinal}", revision, ready=True)

    def replicas(self) -> int:
        return int(self.sts["spec"]["replicas"]) if self.sts else 0

    def ready(self) -> int:
        return sum(1 for p in self.pods.values() if p["status"]["conditions"][0]["status"] == "True")


def steady(make_tgs: Any, replicas: int, **spec: Any) -> Cluster:
    cluster = Cluster(make_tgs(replicas=replicas, **spec))
    cluster.step()
    cluster.create_missing(ready=True)
    cluster.step()
    assert cluster.replicas() == replicas and cluster.ready() == replicas
    return cluster


def test_scale_down_waits_for_a_restarted_pod_then_applies(make_tgs: Any) -> None:
    cluster = steady(make_tgs, 3, autoscaling=AUTOSCALING)
    assert read_recorded(cluster.sts).spec_replicas == 3
    cluster.pods[0] = pod_body("demo-0", cluster.pods[0]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH],
                               ready=False)                          # its container restarted: warming again
    cluster.tgs["spec"]["replicas"] = 1                              # the HPA's write
    deferred = cluster.step(NOW + 30)
    assert cluster.replicas() == 3 and len(cluster.pods) == 3
    assert cluster.sts["metadata"]["annotations"][SPEC_REPLICAS] == "3"
    assert deferred.plan.phase == "ScaleDownDeferred" and "pod demo-0 is warming (30 s" in deferred.plan.message
    assert deferred.plan.recheck_seconds == 1800 - 30 + 1               # the CRD default warmup timeout: 1800
    status = build_status(cluster.tgs, cluster.sts, list(cluster.pods.values()), [], CREATED, rollout=deferred.plan)
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "ScaleDownDeferred")
    before = [{**progressing, "reason": "Stable", "status": "False"}]
    [event] = build_transitions(before, [progressing])
    assert (event.event_type, event.reason) == ("Normal", "ScaleDownDeferred") and "demo-0" in event.message

    cluster.make_ready(0)
    applied = cluster.step(NOW + 60)
    assert cluster.replicas() == 1 and list(cluster.pods) == [0] and applied.plan.phase != "ScaleDownDeferred"
    assert cluster.sts["metadata"]["annotations"][SPEC_REPLICAS] == "1"


def test_without_autoscaling_a_scale_down_is_applied_at_once(make_tgs: Any) -> None:
    cluster = steady(make_tgs, 3)
    cluster.pods[2] = pod_body("demo-2", cluster.pods[2]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH],
                               ready=False)
    cluster.tgs["spec"]["replicas"] = 1
    assert cluster.step(NOW + 30).plan.phase != "ScaleDownDeferred" and cluster.replicas() == 1


def test_scale_down_during_a_rollout_waits_for_the_surge_pod_then_converges_within_bounds(make_tgs: Any) -> None:
    cluster = steady(make_tgs, 3, autoscaling=AUTOSCALING)
    cluster.tgs["spec"]["podAnnotations"] = {"change": "1"}         # a new revision: the rollout surges
    cluster.step()
    cluster.create_missing()                                          # demo-3, the surge pod, warms
    assert cluster.replicas() == 4 and cluster.ready() == 3
    cluster.tgs["spec"]["replicas"] = 1                              # the HPA scales down mid-rollout
    deferred = cluster.step(NOW + 10)
    assert cluster.replicas() == 4 and deferred.plan.delete == () and deferred.plan.phase == "ScaleDownDeferred"
    assert "demo-3 is warming" in deferred.plan.message and "warming up before an old pod" in deferred.plan.message

    cluster.make_ready(3)                                             # every pod Ready: the lower count goes out
    lowered = cluster.step(NOW + 20)
    assert lowered.plan.delete == () and cluster.replicas() == 2 and sorted(cluster.pods) == [0, 1]
    trace = [(cluster.replicas(), cluster.ready())]
    for second in range(30, 200, 10):                                 # then the rollout carries on at 1 replica
        cluster.step(NOW + second)
        cluster.create_missing()
        trace.append((cluster.replicas(), cluster.ready()))
        for ordinal, body in cluster.pods.items():
            if not body["status"]["conditions"][0]["status"] == "True":
                cluster.make_ready(ordinal)
                break
        assert cluster.ready() >= 1, trace                           # capacity of the new spec kept
    assert cluster.replicas() == 1 and list(cluster.pods) == [0], trace
    target = cluster.sts["spec"]["template"]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
    assert cluster.pods[0]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] == target
    assert all(replicas <= 1 + 1 for replicas, _ in trace), trace    # never above replicas + maxSurge
