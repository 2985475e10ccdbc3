"""When a new revision counts as failed: a crash loop after FAILED_AFTER_EXITS exits, an error no restart fixes at
once, a pod never Ready at warmupTimeoutSeconds (no cluster)."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.rollout.model import PodView, Recorded, RolloutInput, RolloutSpec
from textgen_operator.rollout.planner import FAILED_AFTER_EXITS, plan_rollout
from textgen_operator.rollout.statefulset import pod_view

OLD, NEW = "old0000000", "new1111111"
NOW = 1_800_000_000.0


def surge_step(failure: str | None, exits: int | None) -> Any:
    pods = (*(PodView(f"demo-{i}", f"u{i}", i, OLD, True, False, 100.0) for i in range(3)),
            PodView("demo-3", "u3", 3, NEW, False, False, 30.0, failure, exits))
    rec = Recorded(template_revision=NEW, replicas=4, observed=True, good_revision=OLD)
    return plan_rollout(RolloutInput(RolloutSpec(replicas=3), NEW, rec, pods, NOW))


# (case, failure, exits) -> (target, Progressing reason)
TABLE = [
    ("one exit (an OOM kill at a burst): the revision keeps warming", "container server exited", 1,
     (NEW, "WarmingUp")),
    ("two exits: still tolerated", "container server exited", FAILED_AFTER_EXITS - 1, (NEW, "WarmingUp")),
    ("the third exit: a fault of the revision, rolled back", "container server exited", FAILED_AFTER_EXITS,
     (OLD, "RolledBack")),
    ("a config error no restart fixes: at once", "CreateContainerConfigError", None, (OLD, "RolledBack")),
    ("no failure", None, None, (NEW, "WarmingUp")),
]


@pytest.mark.parametrize(("case", "failure", "exits", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_failure_threshold(case: str, failure: str | None, exits: int | None, expected: tuple[str, str]) -> None:
    plan = surge_step(failure, exits)
    assert (plan.target, plan.phase) == expected
    assert (plan.failed_revision == NEW) == (expected[0] == OLD)


def container(state: dict[str, Any], restarts: int, last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "server", "ready": False, "started": False, "restartCount": restarts, "state": state,
            "lastState": last or {}}


def body(*statuses: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "demo-3", "uid": "u3", "creationTimestamp": "2027-01-15T08:00:00Z",
                         "annotations": {}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": list(statuses)}}


EXITED = {"terminated": {"exitCode": 2, "message": "unrecognized arguments"}}
# (case, container statuses) -> (failing, exits)
VIEWS = [
    ("first exit, not restarted yet", [container({"terminated": {"exitCode": 2}}, 0)], (True, 1)),
    ("running again after one exit", [container({"running": {}}, 1, EXITED)], (True, 1)),
    ("in back-off after three exits", [container({"waiting": {"reason": "CrashLoopBackOff"}}, 2, EXITED)],
     (True, 3)),
    ("a config error", [container({"waiting": {"reason": "CreateContainerConfigError", "message": "no key"}}, 0)],
     (True, None)),
    ("a config error wins over a crash loop", [
        container({"waiting": {"reason": "CrashLoopBackOff"}}, 5, EXITED),
        {**container({"waiting": {"reason": "ErrImagePull"}}, 0), "name": "sidecar"}], (True, None)),
    ("starting normally", [container({"running": {}}, 0)], (False, None)),
]


@pytest.mark.parametrize(("case", "statuses", "expected"), VIEWS, ids=[row[0] for row in VIEWS])
def test_exits_are_read_from_the_container_statuses(case: str, statuses: list[dict[str, Any]],
                                                    expected: tuple[bool, int | None]) -> None:
    view = pod_view(body(*statuses), NOW)
    assert (view.failure is not None, view.exits) == expected, view
