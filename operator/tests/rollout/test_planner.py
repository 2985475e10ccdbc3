"""The rollout planner, table-driven: pods and recorded revisions in, the next step out (no cluster)."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from textgen_operator.rollout.model import PodView, Recorded, RolloutInput, RolloutSpec
from textgen_operator.rollout.planner import plan_rollout

OLD, NEW = "old0000000", "new1111111"


def pod(ordinal: int, revision: str = OLD, ready: bool = True, terminating: bool = False, age: float = 100.0,
        failure: str | None = None) -> PodView:
    return PodView(f"demo-{ordinal}", f"uid-{ordinal}-{revision}", ordinal, revision, ready, terminating, age,
                   failure)


def recorded(**fields: Any) -> Recorded:
    base: dict[str, Any] = {"template_revision": NEW, "replicas": 3, "observed": True, "good_revision": OLD}
    return Recorded(**{**base, **fields})


def step(pods: list[PodView], rec: Recorded | None = None, spec_revision: str = NEW, **spec: Any) -> Any:
    rollout = RolloutSpec(**{"replicas": 3, "max_surge": 1, "warmup_timeout_seconds": 600, **spec})
    return plan_rollout(RolloutInput(rollout, spec_revision, rec or recorded(), tuple(pods), now=10_000.0))


def deleted(plan: Any) -> list[str]:
    return [p.name for p in plan.delete]


# (case, pods, recorded fields, spec fields) -> (StatefulSet replicas, pods deleted now, Progressing reason)
TABLE = [
    ("spec change seen: surge up, nothing deleted yet (the template is not applied)",
     [pod(0), pod(1), pod(2)], {"template_revision": OLD, "replicas": 3}, {}, (4, [], "WarmingUp")),
    ("template applied, surge pod warming: no old pod stops",
     [pod(0), pod(1), pod(2), pod(3, NEW, ready=False)], {"replicas": 4}, {}, (4, [], "WarmingUp")),
    ("controller has not seen the template yet: nothing deleted",
     [pod(0), pod(1), pod(2), pod(3, NEW)], {"replicas": 4, "observed": False}, {}, (4, [], "RollingUpdate")),
    ("surge pod Ready: one old pod goes (4 Ready - 1 >= 3)",
     [pod(0), pod(1), pod(2), pod(3, NEW)], {"replicas": 4}, {}, (4, ["demo-2"], "RollingUpdate")),
    ("an old pod is draining and its replacement is not Ready: wait",
     [pod(0), pod(1), pod(2, OLD, ready=False, terminating=True), pod(3, NEW)], {"replicas": 4}, {},
     (4, [], "RollingUpdate")),
    ("replacement warming: 3 Ready only, wait",
     [pod(0), pod(1), pod(2, NEW, ready=False), pod(3, NEW)], {"replicas": 4}, {}, (4, [], "WarmingUp")),
    ("replacement Ready: next old pod",
     [pod(0), pod(1), pod(2, NEW), pod(3, NEW)], {"replicas": 4}, {}, (4, ["demo-1"], "RollingUpdate")),
    ("last replacement warming: the surge stays",
     [pod(0, NEW, ready=False), pod(1, NEW), pod(2, NEW), pod(3, NEW)], {"replicas": 4}, {}, (4, [], "WarmingUp")),
    ("all ordinals below replicas Ready at the target: surge removed",
     [pod(0, NEW), pod(1, NEW), pod(2, NEW), pod(3, NEW)], {"replicas": 4}, {}, (3, [], "Stable")),
    ("maxSurge 2: two old pods go at once",
     [pod(0), pod(1), pod(2), pod(3, NEW), pod(4, NEW)], {"replicas": 5}, {"max_surge": 2},
     (5, ["demo-2", "demo-1"], "RollingUpdate")),
    ("maxSurge 0, maxUnavailable 1: one old pod goes before any new one exists",
     [pod(0), pod(1), pod(2)], {}, {"max_surge": 0, "max_unavailable": 1}, (3, ["demo-2"], "WarmingUp")),
    ("an unready old pod costs no capacity: it goes at once",
     [pod(0), pod(1, ready=False), pod(2), pod(3, NEW, ready=False)], {"replicas": 4}, {},
     (4, ["demo-1"], "WarmingUp")),
    ("paused: nothing deleted although capacity allows",
     [pod(0), pod(1), pod(2), pod(3, NEW)], {"replicas": 4}, {"paused": True}, (4, [], "Paused")),
    ("a user deleted an old pod (recreated at the target, warming): capacity 3 only, wait",
     [pod(0, NEW, ready=False), pod(1), pod(2), pod(3, NEW)], {"replicas": 4}, {}, (4, [], "WarmingUp")),
    ("HPA scaled 3 -> 5 mid-rollout: surge on top of the new count, capacity 5",
     [pod(0), pod(1), pod(2), pod(3, NEW)], {"replicas": 4}, {"replicas": 5}, (6, [], "RollingUpdate")),
    ("HPA scaled 3 -> 2 mid-rollout: old pods above the new count are not replaced",
     [pod(0), pod(1), pod(2), pod(3, NEW)], {"replicas": 4}, {"replicas": 2}, (3, ["demo-1"], "RollingUpdate")),
    ("steady state: nothing to do",
     [pod(0, NEW), pod(1, NEW), pod(2, NEW)], {"replicas": 3, "good_revision": NEW}, {}, (3, [], "Stable")),
    ("HPA scales a steady service up: no surge, plain scaling",
     [pod(0, NEW), pod(1, NEW), pod(2, NEW)], {"replicas": 3, "good_revision": NEW}, {"replicas": 4},
     (4, [], "Scaling")),
]


@pytest.mark.parametrize("case, pods, rec, spec, expected", TABLE, ids=[row[0] for row in TABLE])
def test_next_step(case: str, pods: list[PodView], rec: dict[str, Any], spec: dict[str, Any],
                   expected: tuple[int, list[str], str]) -> None:
    plan = step(pods, recorded(**rec), **spec)
    assert (plan.replicas, deleted(plan), plan.phase) == expected, plan


def test_the_whole_rollout_never_exceeds_the_surge_nor_drops_below_capacity() -> None:
    """Simulates the StatefulSet controller (OnDelete, Parallel) and pods that warm up in two steps."""
    pods = {i: pod(i) for i in range(3)}
    rec, ready_seen, count_seen = recorded(template_revision=OLD, replicas=3), [], []
    for _ in range(60):
        plan = step(list(pods.values()), rec)
        gone = {p.ordinal for p in plan.delete}
        for i in list(pods):               # the controller: deleted pods go, missing ordinals come at the template
            if i in gone or i >= plan.replicas:
                del pods[i]
        for i in range(plan.replicas):
            if i not in pods:
                pods[i] = pod(i, plan.target, ready=False, age=0)
            elif not pods[i].ready and not pods[i].terminating:
                pods[i] = dataclasses.replace(pods[i], ready=True)      # warm after one round
        rec = recorded(template_revision=plan.target, replicas=plan.replicas, good_revision=plan.good_revision,
                       started=plan.started)
        ready_seen.append(sum(p.ready for p in pods.values()))
        count_seen.append(len(pods))
        if plan.phase == "Stable" and all(p.revision == NEW for p in pods.values()) and len(pods) == 3:
            break
    assert plan.phase == "Stable" and sorted(pods) == [0, 1, 2], plan
    assert min(ready_seen) >= 3 and max(count_seen) <= 4, (ready_seen, count_seen)
    assert rec.good_revision == NEW


def test_a_crash_looping_new_revision_is_rolled_back_and_not_retried() -> None:
    pods = [pod(0), pod(1), pod(2), pod(3, NEW, ready=False, failure="container server exited 2: bad flag")]
    plan = step(pods, recorded(replicas=4))
    assert plan.target == OLD and plan.failed_revision == NEW and plan.degraded_reason == "RolledBack"
    assert "bad flag" in (plan.failed_message or "") and deleted(plan) == []   # the template must go back first
    assert [e[1] for e in plan.events] == ["RollingBack"]
    # Next reconcile: the StatefulSet carries the good template again; the failed pod (above replicas) goes by
    # the end of the surge, no good pod is touched, and the failed revision stays refused.
    rec = recorded(template_revision=OLD, replicas=4, failed_revision=NEW, failed_message=plan.failed_message)
    plan = step(pods, rec)
    assert (plan.target, plan.replicas, deleted(plan), plan.phase) == (OLD, 3, [], "RolledBack")
    assert plan.failed_revision == NEW and plan.degraded_reason == "RolledBack"


def test_a_failed_pod_below_replicas_is_replaced_by_a_good_one() -> None:
    pods = [pod(0), pod(1), pod(2, NEW, ready=False, failure="CrashLoopBackOff"), pod(3, NEW)]
    rec = recorded(template_revision=OLD, replicas=4, failed_revision=NEW, failed_message="x")
    plan = step(pods, rec)
    assert plan.target == OLD and deleted(plan) == ["demo-2"] and plan.phase == "RollingBack"


def test_warmup_timeout_fails_the_revision() -> None:
    slow = [pod(0), pod(1), pod(2), pod(3, NEW, ready=False, age=601)]
    plan = step(slow, recorded(replicas=4))
    assert plan.failed_revision == NEW and "warmupTimeoutSeconds: 600" in (plan.failed_message or "")
    in_time = step([pod(0), pod(1), pod(2), pod(3, NEW, ready=False, age=590)], recorded(replicas=4))
    assert in_time.failed_revision is None and in_time.recheck_seconds == pytest.approx(11)


def test_without_auto_rollback_the_rollout_stops_where_it_is() -> None:
    pods = [pod(0), pod(1, NEW), pod(2), pod(3, NEW, ready=False, failure="CrashLoopBackOff")]
    plan = step(pods, recorded(replicas=4), auto_rollback=False)
    assert plan.target == NEW and plan.replicas == 4 and deleted(plan) == []
    assert plan.phase == "RolloutFailed" and plan.degraded_reason == "RolloutFailed"


def test_a_new_spec_after_a_failure_is_tried() -> None:
    rec = recorded(template_revision=OLD, replicas=3, failed_revision=NEW, failed_message="x")
    plan = step([pod(0), pod(1), pod(2)], rec, spec_revision="fix2222222")
    assert plan.target == "fix2222222" and plan.failed_revision is None and plan.replicas == 4


def test_completion_records_the_good_revision_and_ends_the_clock() -> None:
    pods = [pod(0, NEW), pod(1, NEW), pod(2, NEW), pod(3, NEW)]
    plan = step(pods, recorded(replicas=4, started=9_000.0))
    assert plan.good_revision == NEW and plan.started is None and plan.finished == "complete"
    assert [e[1] for e in plan.events] == ["RolloutComplete"] and "1000 s" in plan.events[0][2]


def test_first_creation_is_not_a_rollout() -> None:
    plan = step([], Recorded())
    assert (plan.replicas, plan.rolling, plan.phase, plan.events) == (3, False, "Creating", ())
