"""record_event: the Event watch keeps the cache's FailedCreate records current and names the TGS to reconcile."""
from __future__ import annotations

import copy
import pathlib
from typing import Any

import yaml

from textgen_operator.cache import ObjectCache
from textgen_operator.reconciler import record_event

EVENTS: dict[str, dict[str, Any]] = yaml.safe_load(
    (pathlib.Path(__file__).parents[1] / "status" / "statefulset_events.yaml").read_text())


def ours() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "sts-uid-1", "resourceVersion": "3"}}


def test_an_event_about_our_statefulset_is_recorded_and_enqueues_its_tgs() -> None:
    cache = ObjectCache()
    cache.put(ours())
    assert record_event(cache, None, "ADDED", copy.deepcopy(EVENTS["pod_security"])) == ("ns", "demo")
    assert [f.pod for f in cache.failed_creates_of("ns", "demo")] == ["demo-0"]
    assert record_event(cache, None, "DELETED", copy.deepcopy(EVENTS["pod_security"])) == ("ns", "demo")
    assert cache.failed_creates_of("ns", "demo") == []


def test_other_events_and_foreign_statefulsets_enqueue_nothing() -> None:
    cache = ObjectCache()
    assert record_event(cache, None, "ADDED", copy.deepcopy(EVENTS["successful_create"])) is None
    assert record_event(cache, None, "ADDED", copy.deepcopy(EVENTS["pod_security"])) is None   # not ours
    assert len(cache.failed_creates_of("ns", "demo")) == 1      # kept: ours may show up in the cache later


def test_a_relist_drops_what_was_recorded_in_that_scope() -> None:
    cache = ObjectCache()
    record_event(cache, "ns", "ADDED", copy.deepcopy(EVENTS["pod_security"]))
    other = copy.deepcopy(EVENTS["pod_security"])
    other["metadata"]["namespace"] = other["involvedObject"]["namespace"] = "other"
    record_event(cache, "other", "ADDED", other)
    assert record_event(cache, "ns", "RESET", {}) is None
    assert cache.failed_creates_of("ns", "demo") == [] and len(cache.failed_creates_of("other", "demo")) == 1
    record_event(cache, None, "RESET", {})
    assert cache.failed_creates_of("other", "demo") == []
