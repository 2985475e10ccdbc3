"""The autoscaler a TGS gets: HPA shape per metric type, the KEDA alternative, and removal."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.builders import build_desired
from textgen_operator.builders.autoscaling import (HPA_KIND, SCALED_OBJECT_KIND, build_autoscaler,
                                                   stale_autoscaler_kinds)
from textgen_operator.builders.autoscaling_metrics import builtin_promql
from textgen_operator.config import OperatorConfig

HPA = OperatorConfig()
KEDA = OperatorConfig(autoscaling_provider="keda", keda_prometheus_address="http://prometheus.monitoring:9090")
SELECTOR = {"matchLabels": {"textgen_dev_service": "demo"}}


def kinds(objs: list[dict[str, Any]]) -> list[str]:
    return [f"{o['apiVersion']}/{o['kind']}" for o in objs]


def test_hpa_targets_the_tgs_scale_subresource_and_is_owned_by_it(make_tgs: Any) -> None:
    hpa = build_autoscaler(make_tgs(replicas=2, autoscaling={"minReplicas": 2, "maxReplicas": 5}), HPA)
    assert hpa is not None and (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "demo" and hpa["metadata"]["namespace"] == "ns"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService",
                                             "name": "demo"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    [owner] = hpa["metadata"]["ownerReferences"]
    assert owner["uid"] == "uid-1" and owner["controller"] is True
    assert hpa["metadata"]["labels"]["textgen.dev/service"] == "demo"     # how its watch events find the TGS


@pytest.mark.parametrize("metric, expected", [
    ({}, {"type": "External", "external": {
        "metric": {"name": "textgen_ready_queue_and_batch_size", "selector": SELECTOR},
        "target": {"type": "AverageValue", "averageValue": "8"}}}),
    ({"type": "QueueSize"}, {"type": "External", "external": {
        "metric": {"name": "textgen_ready_queue_size", "selector": SELECTOR},
        "target": {"type": "AverageValue", "averageValue": "2"}}}),
    ({"type": "QueueSize", "averageValue": "2500m"}, {"type": "External", "external": {
        "metric": {"name": "textgen_ready_queue_size", "selector": SELECTOR},
        "target": {"type": "AverageValue", "averageValue": "2500m"}}}),
    ({"type": "Pods", "name": "tgi_request_in_flight", "averageValue": "8"}, {"type": "Pods", "pods": {
        "metric": {"name": "tgi_request_in_flight"}, "target": {"type": "AverageValue", "averageValue": "8"}}}),
    ({"type": "External", "name": "lb_queue", "averageValue": "3", "selector": {"matchLabels": {"lb": "a"}}},
     {"type": "External", "external": {"metric": {"name": "lb_queue", "selector": {"matchLabels": {"lb": "a"}}},
                                       "target": {"type": "AverageValue", "averageValue": "3"}}}),
    ({"type": "External", "name": "lb_queue", "averageValue": "3"},
     {"type": "External", "external": {"metric": {"name": "lb_queue"},
                                       "target": {"type": "AverageValue", "averageValue": "3"}}}),
], ids=["default-queue-and-batch", "queue", "own-target", "pods", "external-selector", "external-bare"])
def test_metric_per_type(make_tgs: Any, metric: dict[str, Any], expected: dict[str, Any]) -> None:
    hpa = build_autoscaler(make_tgs(autoscaling={"minReplicas": 1, "maxReplicas": 3, "metric": metric}), HPA)
    assert hpa is not None and hpa["spec"]["metrics"] == [expected]


def test_keda_scaled_object_queries_the_ready_pods_of_this_tgs(make_tgs: Any) -> None:
    tgs = make_tgs(autoscaling={"minReplicas": 1, "maxReplicas": 4, "metric": {"type": "QueueAndBatchSize"}})
    scaled = build_autoscaler(tgs, KEDA)
    assert scaled is not None and f"{scaled['apiVersion']}/{scaled['kind']}" == SCALED_OBJECT_KIND
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["kind"] == "TextGenerationService" and spec["scaleTargetRef"]["name"] == "demo"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "http://prometheus.monitoring:9090" and meta["threshold"] == "8"
    assert meta["query"] == builtin_promql("QueueAndBatchSize", "ns", "demo")
    assert 'namespace="ns",textgen_dev_service="demo"' in meta["query"] and 'phase="ready"' in meta["query"]
    # The same warmup-derived behavior as the HPA's: KEDA hands it to the HPA it makes.
    hpa = build_autoscaler(tgs, HPA)
    assert hpa is not None
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]


@pytest.mark.parametrize("limits, metric, target", [
    ({"maxBatchSize": 4}, {}, "4"),                                    # one full batch per pod
    ({"maxBatchSize": 4}, {"averageValue": "6"}, "6"),                 # the user's target wins
    ({"maxBatchSize": 4}, {"type": "QueueSize"}, "2"),                 # a queue target is not a batch size
    ({}, {}, "8"),
])
def test_default_target_is_a_full_batch(make_tgs: Any, limits: dict[str, Any], metric: dict[str, Any],
                                        target: str) -> None:
    tgs = make_tgs(limits=limits, autoscaling={"minReplicas": 1, "maxReplicas": 3, "metric": metric})
    hpa = build_autoscaler(tgs, HPA)
    assert hpa is not None and hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] == target


def test_keda_gets_nothing_for_a_metric_it_cannot_query(make_tgs: Any) -> None:
    tgs = make_tgs(autoscaling={"minReplicas": 1, "maxReplicas": 4,
                                "metric": {"type": "Pods", "name": "x", "averageValue": "1"}})
    assert build_autoscaler(tgs, KEDA) is None      # autoscaling_problems says why (test_autoscaling_status)


@pytest.mark.parametrize("autoscaling, config, desired_kind, stale", [
    (None, HPA, None, (HPA_KIND, SCALED_OBJECT_KIND)),
    ({"minReplicas": 1, "maxReplicas": 2}, HPA, HPA_KIND, (SCALED_OBJECT_KIND,)),
    ({"minReplicas": 1, "maxReplicas": 2}, KEDA, SCALED_OBJECT_KIND, (HPA_KIND,)),
], ids=["removed", "hpa", "keda"])
def test_removal_and_provider_switch_leave_exactly_one_autoscaler(
        make_tgs: Any, autoscaling: dict[str, Any] | None, config: OperatorConfig, desired_kind: str | None,
        stale: tuple[str, ...]) -> None:
    tgs = make_tgs(**({"autoscaling": autoscaling} if autoscaling else {}))
    desired = build_desired(tgs, config)
    autoscalers = [k for k in kinds(desired) if k in (HPA_KIND, SCALED_OBJECT_KIND)]
    assert autoscalers == ([desired_kind] if desired_kind else [])
    assert stale_autoscaler_kinds(build_autoscaler(tgs, config)) == stale


@pytest.mark.parametrize("replicas", [1, 3])
def test_the_operator_never_writes_spec_replicas(make_tgs: Any, replicas: int) -> None:
    """The HPA owns spec.replicas (through the scale subresource); the operator only follows it."""
    tgs = make_tgs(replicas=replicas, autoscaling={"minReplicas": 1, "maxReplicas": 4})
    desired = build_desired(tgs, HPA)
    assert "textgen.dev/v1alpha1/TextGenerationService" not in kinds(desired)
    [sts] = [o for o in desired if o["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == replicas


@pytest.mark.parametrize("config, annotations", [
    (OperatorConfig(), {"prometheus.io/scrape": "true", "prometheus.io/port": "80", "prometheus.io/path": "/metrics"}),
    (OperatorConfig(pod_scrape_annotations=False), {}),
])
def test_scrape_annotations_on_server_pods(make_tgs: Any, config: OperatorConfig, annotations: dict[str, str]
                                           ) -> None:
    [sts] = [o for o in build_desired(make_tgs(), config) if o["kind"] == "StatefulSet"]
    pod_annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert {k: v for k, v in pod_annotations.items() if k.startswith("prometheus.io/")} == annotations
    # spec.podAnnotations win: a TGS can opt out of scraping.
    [sts] = [o for o in build_desired(make_tgs(podAnnotations={"prometheus.io/scrape": "false"}), config)
             if o["kind"] == "StatefulSet"]
    assert sts["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
