"""What a rollout says (rollout/words.py), as pure functions: a paused spec change is reported as held, and no
message in any transition states a count that looks wrong ("2/1 replicas ready", "0 pod(s) warming")."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from textgen_operator.builders import build_desired
from textgen_operator.config import OperatorConfig
from textgen_operator.rollout.model import Plan, PodView, Recorded, RolloutInput, RolloutSpec
from textgen_operator.rollout.planner import plan_rollout
from textgen_operator.rollout.step import plan_step
from textgen_operator.rollout.words import ready_words
from textgen_operator.status import build_status

OLD, NEW = "old0000000", "new1111111"
NOW = 1_800_000_000.0


def pod(ordinal: int, revision: str = OLD, ready: bool = True, terminating: bool = False) -> PodView:
    return PodView(f"demo-{ordinal}", f"uid-{ordinal}-{revision}", ordinal, revision, ready, terminating, 100.0)


def plan(pods: list[PodView], rec: Recorded, **spec: Any) -> Plan:
    rollout = RolloutSpec(**{"replicas": 3, "max_surge": 1, **spec})
    return plan_rollout(RolloutInput(rollout, NEW, rec, tuple(pods), now=NOW))


def test_paused_before_the_rollout_starts_holds_the_new_revision_and_says_so() -> None:
    pods = [pod(0), pod(1), pod(2)]
    rec = Recorded(template_revision=OLD, replicas=3, observed=True, good_revision=OLD)
    held = plan(pods, rec, paused=True)
    assert (held.target, held.replicas, held.delete, held.rolling) == (OLD, 3, (), False)
    assert held.phase == "Paused", held          # it said Stable: a GitOps tool then showed Healthy
    assert f"holds revision {NEW}" in held.message and f"3 pod(s) stay at revision {OLD}" in held.message
    assert held.events == ()                      # nothing started, so no RolloutStarted
    unpaused = plan(pods, rec)
    assert (unpaused.target, unpaused.replicas, unpaused.phase) == (NEW, 4, "WarmingUp")
    steady = plan([pod(0, NEW), pod(1, NEW), pod(2, NEW)], dataclasses.replace(rec, template_revision=NEW,
                                                                              good_revision=NEW), paused=True)
    assert steady.phase == "Stable" and "paused will hold the next spec change" in steady.message


def test_paused_before_the_rollout_is_not_ready_and_progressing_unknown(make_tgs: Any) -> None:
    """Through the bodies the reconciler has: Ready=False/RolloutPaused (the pods do not run the spec) and
    Progressing=Unknown/Paused (as a Deployment with spec.paused); the pods' revision stays updateRevision."""
    config = OperatorConfig()
    old_tgs = make_tgs(replicas=1)
    sts = next(o for o in plan_step(old_tgs, build_desired(old_tgs, config), None, [], NOW).desired
               if o["kind"] == "StatefulSet")
    sts["metadata"].update({"generation": 1, "uid": "sts-uid"})
    sts["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    running = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "demo-0", "uid": "p0", "namespace": "ns", "creationTimestamp": "2027-01-15T08:00:00Z",
        "annotations": dict(sts["spec"]["template"]["metadata"]["annotations"])},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    steady = plan_step(old_tgs, build_desired(old_tgs, config), sts, [running], NOW)      # records it as good
    sts = {**next(o for o in steady.desired if o["kind"] == "StatefulSet"), "status": sts["status"]}
    for paused, ready, progressing in [(False, ("False", "ReplicasNotReady"), ("True", "WarmingUp")),
                                       (True, ("False", "RolloutPaused"), ("Unknown", "Paused"))]:
        new_tgs = make_tgs(replicas=1, podAnnotations={"a": "1"}, rollout={"paused": paused})
        step = plan_step(new_tgs, build_desired(new_tgs, config), sts, [running], NOW)
        status = build_status(new_tgs, sts, [running], [], "2027-01-15T08:01:00Z", rollout=step.plan)
        got = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
        assert (got["Ready"], got["Progressing"]) == (ready, progressing), status["conditions"]
        # Paused: the StatefulSet keeps the running template, and updateRevision stays the pods' revision.
        kept = next(o for o in step.desired if o["kind"] == "StatefulSet")["spec"]["template"] == sts["spec"][
            "template"]
        assert kept == paused and (status["updateRevision"] == steady.plan.target) == paused, status


@pytest.mark.parametrize("ready, desired, running, expected", [
    (1, 1, 1, "1/1 replicas ready"),
    (0, 2, 2, "0/2 replicas ready"),
    (2, 1, 1, "2 ready (1 desired + 1 being removed: the StatefulSet now runs 1)"),     # the end of a surge
    (3, 1, 3, "3 ready (1 desired + 2 kept for now: the StatefulSet runs 3)"),                  # a deferred scale-down
])
def test_ready_words_never_say_more_ready_than_desired(ready: int, desired: int, running: int,
                                                       expected: str) -> None:
    assert ready_words(ready, desired, running) == expected


def test_the_end_of_a_surge_is_not_two_of_one_ready(make_tgs: Any) -> None:
    """The StatefulSet is back at 1 replica, its status still counts the surge pod Ready."""
    tgs = make_tgs(replicas=1)
    sts = {"metadata": {"name": "demo", "generation": 3}, "spec": {"replicas": 1},
           "status": {"observedGeneration": 3, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}}
    status = build_status(tgs, sts, [], [], "2027-01-15T08:01:00Z")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["message"] == ("2 ready (1 desired + 1 being removed: the "
                                                              "StatefulSet now runs 1)"), ready


SUSPICIOUS = [re.compile(r"\b0 pod\(s\)[^:;]*warming"), re.compile(r"\b0 surge pod"), re.compile(r"(^|[\s(])-\d")]


def _suspicious(text: str) -> list[str]:
    found = [p.pattern for p in SUSPICIOUS if p.search(text)]
    found += [m.group(0) for m in re.finditer(r"(\d+)/(\d+) replicas", text) if int(m.group(1)) > int(m.group(2))]
    return found


def _controller(pods: dict[int, PodView], p: Plan, rec: Recorded) -> dict[int, PodView]:
    """The StatefulSet controller and kubelet, one step behind: a deleted or surplus pod terminates first and is
    gone a step later; a missing ordinal appears (not Ready) only once the template it needs was applied and
    observed; a new pod is Ready a step after it appeared."""
    out: dict[int, PodView] = {}
    for i, v in pods.items():
        if v.terminating:
            continue
        if i in {d.ordinal for d in p.delete} or i >= p.replicas:
            out[i] = dataclasses.replace(v, ready=False, terminating=True)
        else:
            out[i] = dataclasses.replace(v, ready=True)
    if rec.template_revision == p.target and rec.replicas == p.replicas:
        for i in range(p.replicas):
            out.setdefault(i, pod(i, p.target, ready=False))
    return out


@pytest.mark.parametrize("surge, unavailable", [(1, 0), (2, 0), (0, 1)])
def test_no_message_of_a_whole_rollout_states_a_wrong_count(surge: int, unavailable: int) -> None:
    pods = {i: pod(i) for i in range(3)}
    rec = Recorded(template_revision=OLD, replicas=3, observed=True, good_revision=OLD)
    said: list[str] = []
    for _ in range(40):
        p = plan(list(pods.values()), rec, max_surge=surge, max_unavailable=unavailable)
        num_ready = sum(v.ready for v in pods.values())
        said += [p.message, ready_words(num_ready, 3, p.replicas)] + [e[2] for e in p.events]
        rec = Recorded(template_revision=p.target, replicas=p.replicas, observed=True,
                       good_revision=p.good_revision, started=p.started)
        pods = _controller(pods, p, rec)
        if p.phase == "Stable" and sorted(pods) == [0, 1, 2] and all(v.revision == NEW for v in pods.values()):
            break
    assert p.phase == "Stable" and all(v.revision == NEW for v in pods.values()), (p, pods)
    assert any("surge pod(s)" in s for s in said) == (surge > 0), said      # the first pods are named for what
    assert any("warming up" in s for s in said), said                      # they are, then they warm up
    bad = {s: _suspicious(s) for s in said if _suspicious(s)}
    assert not bad, bad


def test_the_old_words_are_caught() -> None:
    """The checks above can fail: the messages this file replaced."""
    assert _suspicious("0 pod(s) of revision x warming up before an old pod stops: ...")
    assert _suspicious("AllReplicasReady: 2/1 replicas ready")
    assert _suspicious("rolling to revision x: 0 surge pod(s) warm up before any old pod stops")
