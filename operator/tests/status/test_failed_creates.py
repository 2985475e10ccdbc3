"""events: which FailedCreate Events of the StatefulSet controller still hold, and the Degraded they cause."""
from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from textgen_operator.cache import ObjectCache
from textgen_operator.events import FailedCreate, current_failed_creates, failed_create_from_event
from textgen_operator.status import build_conditions, build_transitions, build_status

EVENTS: dict[str, dict[str, Any]] = yaml.safe_load(
    (pathlib.Path(__file__).parent / "statefulset_events.yaml").read_text())
NOW = "2026-11-30T10:04:00Z"


def event(scenario: str) -> dict[str, Any]:
    return copy.deepcopy(EVENTS[scenario])


def failure(scenario: str) -> FailedCreate:
    found = failed_create_from_event(event(scenario))
    assert found is not None
    return found


def sts(replicas: int = 1, existing: int = 0, uid: str = "sts-uid-1") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "demo", "namespace": "ns", "uid": uid, "generation": 1, "resourceVersion": "1"},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": 1, "replicas": existing, "readyReplicas": 0, "updatedReplicas": 0}}


def pod(name: str, created: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, "resourceVersion": "9",
                         "labels": {"textgen.dev/service": "demo"}},
            "status": {"phase": "Pending"}}


def test_the_event_is_read_as_the_controller_wrote_it() -> None:
    found = failure("pod_security")
    assert (found.namespace, found.statefulset, found.statefulset_uid, found.pod) == ("ns", "demo", "sts-uid-1",
                                                                                      "demo-0")
    assert found.last_seen.isoformat() == "2026-11-30T10:03:20+00:00"
    assert failure("quota_events_k8s_io").last_seen.isoformat() == "2026-11-30T10:02:00+00:00"
    assert failed_create_from_event(event("successful_create")) is None


@pytest.mark.parametrize("scenario, statefulset, pods, accounts, holds", [
    ("pod_security", sts(), [], set(), True),
    ("pod_security", sts(uid="sts-uid-0"), [], set(), False),                  # about an earlier StatefulSet
    ("pod_security", sts(), [pod("demo-0", "2026-11-30T10:03:20Z")], set(), False),   # created since
    ("pod_security", sts(), [pod("demo-0", "2026-11-30T09:59:00Z")], set(), True),    # an older pod, going away
    ("pod_security", sts(replicas=0), [], set(), False),                       # scaled below it
    ("missing_service_account", sts(), [], set(), True),
    ("missing_service_account", sts(), [], {"demo"}, False),                   # the ServiceAccount exists now
    ("quota_events_k8s_io", sts(replicas=3, existing=2), [], set(), True),
    ("quota_events_k8s_io", sts(replicas=2, existing=2), [], set(), False),
])
def test_which_failures_still_hold(scenario: str, statefulset: dict[str, Any], pods: list[dict[str, Any]],
                                   accounts: set[str], holds: bool) -> None:
    assert current_failed_creates([failure(scenario)], statefulset, pods, accounts) == (
        [failure(scenario)] if holds else [])


def test_no_statefulset_no_failure() -> None:
    assert current_failed_creates([failure("pod_security")], None, [], set()) == []


def test_degraded_carries_the_controllers_message_and_a_warning_event(make_tgs: Any) -> None:
    tgs = make_tgs(accelerator={"type": "gaudi", "count": 1})
    before = build_status(tgs, sts(), [], [], NOW)
    after = build_status(tgs, sts(), [], [], NOW, [failure("pod_security")])
    degraded = next(c for c in after["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "FailedCreate"
    assert 'must not include "SYS_NICE"' in degraded["message"]
    assert "pod-security.kubernetes.io/enforce" in degraded["message"]
    [warning] = build_transitions(before["conditions"], after["conditions"])
    assert (warning.event_type, warning.reason) == ("Warning", "FailedCreate")


def test_a_spec_problem_outranks_a_failed_create(make_tgs: Any) -> None:
    from textgen_operator.problems import Problem
    conditions = build_conditions(make_tgs(), sts(), [], [Problem("SecretNotFound", "create it")],
                                  [failure("pod_security")])
    assert next(c for c in conditions if c.type == "Degraded").reason == "SecretNotFound"


def test_the_cache_forgets_a_failure_once_its_pod_was_created() -> None:
    """A rollout deletes and re-creates pods: an hour-old FailedCreate must not come back meanwhile."""
    cache = ObjectCache()
    cache.put_failed_create(failure("pod_security"))
    assert cache.failed_creates_of("ns", "demo") == [failure("pod_security")]
    cache.put(pod("demo-0", "2026-11-30T10:03:21Z"))
    assert cache.failed_creates_of("ns", "demo") == []
    cache.delete(pod("demo-0", "2026-11-30T10:03:21Z"))
    assert cache.failed_creates_of("ns", "demo") == []


def test_the_cache_ignores_a_failure_older_than_the_pod_it_holds() -> None:
    cache = ObjectCache()
    cache.put(pod("demo-0", "2026-11-30T10:05:00Z"))                   # listed before the Events at startup
    cache.put_failed_create(failure("pod_security"))
    assert cache.failed_creates_of("ns", "demo") == []
    newer = event("pod_security")
    newer["lastTimestamp"] = "2026-11-30T10:06:00Z"                    # failing again after that pod went away
    found = failed_create_from_event(newer)
    assert found is not None
    cache.delete(pod("demo-0", "2026-11-30T10:05:00Z"))
    cache.put_failed_create(found)
    assert cache.failed_creates_of("ns", "demo") == [found]
    cache.delete_failed_create("ns", "demo", found.event)
    assert cache.failed_creates_of("ns", "demo") == []
