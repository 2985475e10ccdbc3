"""The Autoscaling condition repeats the HPA's own reason and message; kubectl scale is reported as overridden."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.autoscaling_status import autoscaling_condition, autoscaling_problems
from textgen_operator.config import OperatorConfig
from textgen_operator.spec import tgs_spec
from textgen_operator.status import build_status, build_transitions

SCALING = {"minReplicas": 1, "maxReplicas": 3}


def hpa(conditions: list[tuple[str, str, str, str]], current: int = 1, desired: int = 1) -> dict[str, Any]:
    """An HPA as the API returns it (status written by the HPA controller)."""
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "demo"},
            "status": {"currentReplicas": current, "desiredReplicas": desired,
                       "conditions": [{"type": t, "status": s, "reason": r, "message": m}
                                      for t, s, r, m in conditions]}}


ABLE = ("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
ACTIVE = ("ScalingActive", "True", "ValidMetricFound",
          "the HPA was able to successfully calculate a replica count from external metric textgen_ready_queue_size")
WITHIN = ("ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the acceptable range")
NO_METRICS = ("ScalingActive", "False", "FailedGetExternalMetric",
              "the HPA was unable to compute the replica count: unable to get external metric ns/"
              "textgen_ready_queue_size: no metrics returned from external metrics API")


@pytest.mark.parametrize("autoscaler, status, reason, in_message", [
    (None, "Unknown", "AutoscalerPending", "autoscaler has not reported"),
    (hpa([]), "Unknown", "AutoscalerPending", "HorizontalPodAutoscaler has not reported"),
    (hpa([ABLE, ACTIVE, WITHIN], 2, 2), "True", "ValidMetricFound", "(2 replicas, desired 2): the HPA was able"),
    (hpa([ABLE, ACTIVE, ("ScalingLimited", "True", "TooManyReplicas",
                         "the desired replica count is more than the maximum replica count")], 3, 3),
     "True", "TooManyReplicas", "more than the maximum replica count; raise spec.autoscaling.maxReplicas"),
    (hpa([ABLE, ACTIVE, ("ScalingLimited", "True", "TooFewReplicas", "the desired replica count is less than "
                         "the minimum replica count")]), "True", "ValidMetricFound", "(1 replicas, desired 1)"),
    (hpa([ABLE, NO_METRICS, WITHIN]), "False", "FailedGetExternalMetric", "no metrics returned"),
    (hpa([("AbleToScale", "False", "FailedGetScale", "the HPA controller was unable to get the target's current "
                                                      "scale: forbidden"), NO_METRICS]),
     "False", "FailedGetScale", "unable to get the target's current scale"),
], ids=["not-seen", "no-status", "active", "at-max", "at-min-is-not-news", "no-metrics", "cannot-scale"])
def test_condition_from_the_hpa(make_tgs: Any, autoscaler: dict[str, Any] | None, status: str, reason: str,
                                in_message: str) -> None:
    tgs = make_tgs(autoscaling=SCALING)
    condition = autoscaling_condition(tgs, tgs_spec(tgs), autoscaler)
    assert condition is not None and (condition.type, condition.status, condition.reason) == (
        "Autoscaling", status, reason)
    assert in_message in condition.message


def test_scaled_object_without_status_names_keda(make_tgs: Any) -> None:
    """No KEDA operator, no ScaledObject status: the TGS says who it waits for (e2e/test_autoscaling_keda.py)."""
    tgs = make_tgs(autoscaling=SCALING)
    scaled_object = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "demo"}}
    condition = autoscaling_condition(tgs, tgs_spec(tgs), scaled_object)
    assert condition is not None and (condition.status, condition.reason) == ("Unknown", "AutoscalerPending")
    assert condition.message == ("the ScaledObject has not reported a status yet (KEDA's operator writes it: if "
                                 "this lasts, check that KEDA runs in the cluster)")


def test_no_condition_without_autoscaling(make_tgs: Any) -> None:
    tgs = make_tgs()
    assert autoscaling_condition(tgs, tgs_spec(tgs), hpa([ABLE, ACTIVE])) is None


def managed(manager: str, subresource: str = "") -> dict[str, Any]:
    entry = {"manager": manager, "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    return {**entry, "subresource": subresource} if subresource else entry


@pytest.mark.parametrize("manager, replicas, desired, overridden", [
    ("kubectl", 3, 1, True),                          # kubectl scale tgs --replicas 3 while autoscaling
    ("kubectl", 1, 1, False),                         # what the HPA wants anyway
    ("kube-controller-manager", 3, 1, False),         # the HPA's own write, its status not updated yet
    ("kube-controller-manager", 2, 2, False),
    ("kubectl", 3, 0, False),                         # the HPA has computed nothing yet
], ids=["kubectl-scale", "kubectl-same", "hpa-write-in-flight", "hpa", "hpa-not-computed"])
def test_kubectl_scale_is_reported_as_overridden(make_tgs: Any, manager: str, replicas: int, desired: int,
                                                 overridden: bool) -> None:
    tgs = make_tgs(replicas=replicas, autoscaling=SCALING)
    tgs["metadata"]["managedFields"] = [managed("kubectl-client-side-apply"), managed(manager, "scale")]
    tgs["metadata"]["managedFields"][0]["fieldsV1"] = {"f:spec": {"f:model": {}}}   # replicas moved away from it
    condition = autoscaling_condition(tgs, tgs_spec(tgs), hpa([ABLE, ACTIVE, WITHIN], replicas, desired))
    assert condition is not None and (condition.reason == "ScaleOverridden") == overridden
    if overridden:
        assert f"spec.replicas={replicas} was set by {manager}" in condition.message
        assert f"it wants {desired}" in condition.message


def test_an_hpa_without_metrics_overrides_nothing(make_tgs: Any) -> None:
    tgs = make_tgs(replicas=3, autoscaling=SCALING)
    tgs["metadata"]["managedFields"] = [managed("kubectl", "scale")]
    condition = autoscaling_condition(tgs, tgs_spec(tgs), hpa([ABLE, NO_METRICS, WITHIN], 3, 1))
    assert condition is not None and condition.reason == "FailedGetExternalMetric"


def test_override_and_lost_metrics_are_warning_events(make_tgs: Any) -> None:
    tgs = make_tgs(replicas=3, autoscaling=SCALING)
    tgs["metadata"]["managedFields"] = [managed("kubectl", "scale")]
    spec = tgs_spec(tgs)
    active = autoscaling_condition(tgs, spec, hpa([ABLE, ACTIVE, WITHIN], 3, 3))
    overridden = autoscaling_condition(tgs, spec, hpa([ABLE, ACTIVE, WITHIN], 3, 1))
    lost = autoscaling_condition(tgs, spec, hpa([ABLE, NO_METRICS, WITHIN], 3, 3))
    assert active is not None and overridden is not None and lost is not None
    statuses = [build_status(tgs, None, [], [], "2026-11-30T00:00:00Z", extra_conditions=[c])
                for c in (active, overridden, lost)]
    assert [c["type"] for c in statuses[0]["conditions"]] == ["Ready", "Progressing", "Degraded", "Autoscaling"]
    events = [build_transitions(a["conditions"], b["conditions"]) for a, b in zip(statuses, statuses[1:])]
    assert [(e.event_type, e.reason) for batch in events for e in batch] == [
        ("Warning", "ScaleOverridden"), ("Warning", "FailedGetExternalMetric")]


@pytest.mark.parametrize("provider, metric, reasons", [
    ("hpa", {"type": "Pods", "name": "x", "averageValue": "1"}, []),
    ("keda", {"type": "QueueSize"}, []),
    ("keda", {"type": "External", "name": "x", "averageValue": "1"}, ["AutoscalingMetricUnsupported"]),
])
def test_keda_refuses_metrics_it_has_no_query_for(make_tgs: Any, provider: str, metric: dict[str, Any],
                                                  reasons: list[str]) -> None:
    config = OperatorConfig(autoscaling_provider=provider,  # type: ignore[arg-type]
                            keda_prometheus_address="http://p:9090")
    problems = autoscaling_problems(tgs_spec(make_tgs(autoscaling={**SCALING, "metric": metric})), config)
    assert [p.reason for p in problems] == reasons and not any(p.blocking for p in problems)
