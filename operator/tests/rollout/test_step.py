"""A rollout step from Kubernetes bodies: the StatefulSet to apply carries the plan (template, replicas,
annotations), and what it records is what the next step reads back (an operator restarted mid-rollout)."""
from __future__ import annotations

import copy
import json
from typing import Any

from textgen_operator.builders import build_desired
from textgen_operator.config import OperatorConfig
from textgen_operator.names import ANNOTATION_TEMPLATE_HASH
from textgen_operator.rollout.statefulset import (FAILED_REVISION, GOOD_REVISION, GOOD_TEMPLATE, ROLLOUT_STARTED,
                                                  read_recorded)
from textgen_operator.rollout.step import plan_step
from textgen_operator.status import build_status

CONFIG = OperatorConfig()
NOW = 1_800_000_000.0


def sts_of(desired: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in desired if o["kind"] == "StatefulSet")


def live(sts: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """The StatefulSet as the API returns it after our apply, its controller caught up."""
    out = copy.deepcopy(sts)
    out["metadata"].update({"generation": generation, "uid": "sts-uid"})
    out["status"] = {"observedGeneration": generation}
    return out


def pod(sts: dict[str, Any], ordinal: int, ready: bool = True, **status: Any) -> dict[str, Any]:
    revision = sts["spec"]["template"]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"demo-{ordinal}", "uid": f"{revision}-{ordinal}", "namespace": "ns",
                         "creationTimestamp": "2027-01-15T08:00:00Z",
                         "annotations": {ANNOTATION_TEMPLATE_HASH: revision}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       **status}}


def test_a_spec_change_surges_records_its_start_and_a_rollback_restores_the_good_template(make_tgs: Any) -> None:
    good_tgs = make_tgs(replicas=2)
    first = plan_step(good_tgs, build_desired(good_tgs, CONFIG), None, [], NOW)
    assert sts_of(first.desired)["spec"]["replicas"] == 2 and first.plan.phase == "Creating"
    good_sts = live(sts_of(first.desired))
    pods = [pod(good_sts, 0), pod(good_sts, 1)]
    steady = plan_step(good_tgs, build_desired(good_tgs, CONFIG), good_sts, pods, NOW)
    recorded_sts = live(sts_of(steady.desired))
    annotations = recorded_sts["metadata"]["annotations"]
    assert json.loads(annotations[GOOD_TEMPLATE]) == good_sts["spec"]["template"]
    assert read_recorded(recorded_sts).good_revision == first.plan.target

    bad_tgs = make_tgs(replicas=2, args=["--no-such-flag"])
    change = plan_step(bad_tgs, build_desired(bad_tgs, CONFIG), recorded_sts, pods, NOW)
    bad_sts = live(sts_of(change.desired), generation=2)
    assert bad_sts["spec"]["replicas"] == 3 and "--no-such-flag" in json.dumps(bad_sts["spec"]["template"])
    assert bad_sts["metadata"]["annotations"][ROLLOUT_STARTED] == f"{NOW:.0f}"
    assert [e[1] for e in change.plan.events] == ["RolloutStarted"]

    crash = {"containerStatuses": [{"name": "server", "restartCount": 2, "ready": False, "state": {
        "waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {
            "exitCode": 2, "message": "error: unrecognized arguments: --no-such-flag"}}}]}
    failing = pods + [pod(bad_sts, 2, ready=False, **crash)]
    rollback = plan_step(bad_tgs, build_desired(bad_tgs, CONFIG), bad_sts, failing, NOW + 30)
    back_sts = sts_of(rollback.desired)
    assert back_sts["spec"]["template"] == good_sts["spec"]["template"]
    assert back_sts["metadata"]["annotations"][FAILED_REVISION] == change.plan.target
    assert back_sts["metadata"]["annotations"][GOOD_REVISION] == first.plan.target
    [problem] = rollback.problems
    assert problem.reason == "RolledBack" and "unrecognized arguments: --no-such-flag" in problem.message

    # An operator restarted now reads the same story back from the StatefulSet.
    again = plan_step(bad_tgs, build_desired(bad_tgs, CONFIG), live(back_sts, 3), failing, NOW + 40)
    assert again.plan.target == first.plan.target and again.plan.degraded_reason == "RolledBack"
    status = build_status(bad_tgs, live(back_sts, 3), failing, again.problems, "2027-01-15T08:01:00Z",
                          rollout=again.plan)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["reason"] == "RolledBack", conditions
    assert "unrecognized arguments" in conditions["Degraded"]["message"]
    assert status["updateRevision"] == status["currentRevision"] == first.plan.target


def test_every_template_change_is_a_new_revision(make_tgs: Any) -> None:
    """The revision is the hash of the whole pod template: a pod annotation alone must roll the pods (it once
    left the hash unchanged, and the planner saw the old pods as already updated)."""
    def revision(**spec: Any) -> str:
        tgs = make_tgs(**{"replicas": 2, **spec})
        return str(sts_of(build_desired(tgs, CONFIG))["spec"]["template"]["metadata"]["annotations"][
            ANNOTATION_TEMPLATE_HASH])

    base = revision()
    assert len({base, revision(podAnnotations={"a": "1"}), revision(podAnnotations={"a": "2"}),
                revision(podLabels={"team": "x"}), revision(args=["--json-output"])}) == 5
    assert revision() == base and revision(replicas=3) == base      # replicas are not the template
