"""build_status / build_conditions / build_transitions: counts, conditions, reasons, events."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.problems import Problem
from textgen_operator.status import build_conditions, build_status, build_transitions, status_changed

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def sts(replicas: int, ready: int, updated: int, current: str = "r1", update: str = "r1",
        observed: int = 1, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "demo", "generation": generation},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
                       "currentRevision": current, "updateRevision": update, "observedGeneration": observed}}


def pod(name: str, phase: str = "Running", ready: bool = False, unschedulable: str | None = None) -> dict[str, Any]:
    """A pod as a kubelet reports it: scheduled and starting (startup probe pending), or ready."""
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": unschedulable})
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if phase == "Running":
        status["containerStatuses"] = [{"name": "server", "ready": ready, "started": ready, "restartCount": 0,
                                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]
    return {"metadata": {"name": name}, "status": status}


def summary(conditions: list[Any]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in conditions}


@pytest.mark.parametrize("replicas, observed_sts, pods, problems, expected", [
    (2, None, [], [], {"Ready": ("False", "ReplicasNotReady"), "Progressing": ("True", "Creating"),
                      "Degraded": ("False", "AsExpected")}),
    (2, sts(2, 2, 2), [pod("a", ready=True), pod("b", ready=True)], [],
     {"Ready": ("True", "AllReplicasReady"), "Progressing": ("False", "Stable"), "Degraded": ("False", "AsExpected")}),
    (2, sts(2, 1, 2), [pod("a", ready=True), pod("b")], [],
     {"Ready": ("False", "ReplicasNotReady"), "Progressing": ("True", "Scaling")}),
    (2, sts(2, 2, 1, update="r2"), [], [],
     {"Ready": ("False", "ReplicasNotReady"), "Progressing": ("True", "RollingUpdate")}),
    (1, sts(1, 1, 1, observed=1, generation=2), [], [], {"Progressing": ("True", "Updating")}),
    (1, sts(1, 0, 1), [pod("a", phase="Pending", unschedulable="0/5 nodes are available: Insufficient nvidia.com/gpu")],
     [], {"Degraded": ("True", "Unschedulable"), "Ready": ("False", "ReplicasNotReady")}),
    (1, None, [], [Problem("SecretNotFound", "create it")],
     {"Degraded": ("True", "SecretNotFound"), "Ready": ("False", "SecretNotFound")}),
    (0, sts(0, 0, 0), [], [], {"Ready": ("True", "ScaledToZero"), "Progressing": ("False", "Stable")}),
])
def test_conditions(make_tgs: Any, replicas: int, observed_sts: Any, pods: list[Any], problems: list[Problem],
                    expected: dict[str, tuple[str, str]]) -> None:
    got = summary(build_conditions(make_tgs(replicas=replicas), observed_sts, pods, problems))
    assert {k: got[k] for k in expected} == expected


def test_unschedulable_message_carries_the_schedulers_reason(make_tgs: Any) -> None:
    message = "0/5 nodes are available: 4 Insufficient nvidia.com/gpu"
    conditions = build_conditions(make_tgs(), sts(1, 0, 1), [pod("demo-0", "Pending", unschedulable=message)], [])
    degraded = next(c for c in conditions if c.type == "Degraded")
    assert message in degraded.message and "demo-0" in degraded.message


def test_status_counts_selector_and_endpoint(make_tgs: Any) -> None:
    tgs = make_tgs(replicas=3)
    status = build_status(tgs, sts(3, 2, 3), [pod("a", ready=True), pod("b", ready=True), pod("c")], [], NOW)
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (3, 2, 3)
    assert status["warmingReplicas"] == 1 and status["observedGeneration"] == 1
    assert status["selector"] == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=textgen"
    assert status["endpoint"] == "http://demo.ns.svc:80"


def test_transition_time_moves_only_when_status_flips(make_tgs: Any) -> None:
    tgs = make_tgs()
    first = build_status(tgs, sts(1, 0, 1), [], [], NOW)
    tgs["status"] = first
    same = build_status(tgs, sts(1, 0, 1), [], [], LATER)
    assert not status_changed(first, same), "an unchanged world must not cause a status write"
    flipped = build_status(tgs, sts(1, 1, 1), [], [], LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times["Ready"] == LATER and times["Degraded"] == NOW


def test_transitions_become_events(make_tgs: Any) -> None:
    tgs = make_tgs()
    pending = build_status(tgs, sts(1, 0, 1), [], [], NOW)["conditions"]
    ready = build_status(tgs, sts(1, 1, 1), [], [], NOW)["conditions"]
    broken = build_status(tgs, None, [], [Problem("SecretNotFound", "create the Secret")], NOW)["conditions"]
    assert [(e.event_type, e.reason) for e in build_transitions(pending, ready)] == [("Normal", "AllReplicasReady")]
    assert build_transitions(ready, ready) == []
    assert ("Warning", "SecretNotFound") in [(e.event_type, e.reason) for e in build_transitions(ready, broken)]


def test_a_fresh_object_starting_normally_makes_no_event(make_tgs: Any) -> None:
    first = build_status(make_tgs(), None, [], [], NOW)["conditions"]
    assert build_transitions([], first) == []
    broken = build_status(make_tgs(), None, [], [Problem("SecretNotFound", "create it")], NOW)["conditions"]
    assert [(e.event_type, e.reason) for e in build_transitions([], broken)] == [("Warning", "SecretNotFound")]


def test_not_ready_until_the_statefulset_controller_observed_the_change(make_tgs: Any) -> None:
    """The defect of test_spec_change_rolls_the_pods: right after a spec change is applied, the StatefulSet's
    status still counts every replica ready and updated, for the previous template."""
    tgs = make_tgs(replicas=2)
    tgs["metadata"]["generation"] = 2
    stale = sts(2, 2, 2, observed=1, generation=2)
    status = build_status(tgs, stale, [pod("a", ready=True), pod("b", ready=True)], [], NOW)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReplicasNotReady")
    assert "has not observed generation 2" in ready["message"]
    assert status["updatedReplicas"] == 0, "no pod is known to run the new spec yet"
    observed = build_status(tgs, sts(2, 2, 2, observed=2, generation=2), [pod("a", ready=True), pod("b", ready=True)],
                            [], NOW)
    assert next(c for c in observed["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_a_crash_looping_pod_degrades_with_the_containers_last_message(make_tgs: Any) -> None:
    crashing = pod("demo-1")
    crashing["status"]["containerStatuses"][0].update({
        "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                     "message": "ValueError: model has 12 heads, not divisible by --num-shard 5\n"}}})
    tgs = make_tgs(replicas=2)
    healthy = build_status(tgs, sts(2, 1, 2), [pod("demo-0", ready=True), pod("demo-1")], [], NOW)
    status = build_status(tgs, sts(2, 1, 2), [pod("demo-0", ready=True), crashing], [], NOW)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "CrashLoopBackOff")
    assert "pod demo-1" in degraded["message"] and "not divisible by --num-shard 5" in degraded["message"]
    assert status["warmingReplicas"] == 0 and healthy["warmingReplicas"] == 1
    assert [(e.event_type, e.reason) for e in build_transitions(healthy["conditions"], status["conditions"])] == [
        ("Warning", "CrashLoopBackOff")]
    back = build_status(tgs, sts(2, 2, 2), [pod("demo-0", ready=True), pod("demo-1", ready=True)], [], LATER)
    assert ("Normal", "AsExpected") in [(e.event_type, e.reason)
                                        for e in build_transitions(status["conditions"], back["conditions"])]


def test_last_warmup_is_measured_and_kept_when_no_pod_tells(make_tgs: Any) -> None:
    tgs = make_tgs()
    ready = pod("demo-0", ready=True)
    ready["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:01:15Z"   # started 00:00:00
    status = build_status(tgs, sts(1, 1, 1), [ready], [], NOW)
    assert status["lastWarmupSeconds"] == 75.0
    tgs["status"] = status
    assert build_status(tgs, sts(1, 0, 1), [pod("demo-0")], [], LATER)["lastWarmupSeconds"] == 75.0
    assert "lastWarmupSeconds" not in build_status(make_tgs(), sts(1, 0, 1), [pod("demo-0")], [], NOW)
