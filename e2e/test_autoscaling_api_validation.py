"""spec.autoscaling on a real API server: the CRD's CEL rules refuse what the operator could not honour, and the
HorizontalPodAutoscaler the operator builds from what the CRD accepts is valid autoscaling/v2."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from e2e.harness import Cluster, apply_yaml
from e2e.test_cluster_api_validation import tgs, tgs_crd  # noqa: F401  (tgs_crd: the CRD copy fixture)
from textgen_operator.builders.autoscaling import build_hpa
from textgen_operator.render import as_live

SCALING = {"minReplicas": 1, "maxReplicas": 4}


@pytest.mark.usefixtures("tgs_crd")
@pytest.mark.parametrize("autoscaling, message", [
    ({**SCALING, "metric": {"type": "Pods"}}, "autoscaling.metric.name is required with type Pods or External"),
    ({**SCALING, "metric": {"type": "QueueSize", "name": "tgi_queue_size"}},
     "refused with the built-in types QueueSize and QueueAndBatchSize"),
    ({**SCALING, "metric": {"type": "Pods", "name": "x", "averageValue": "1", "selector": {"matchLabels": {}}}},
     "autoscaling.metric.selector is only used with type External"),
    ({**SCALING, "metric": {"type": "External", "name": "x"}}, "autoscaling.metric.averageValue is required"),
    ({**SCALING, "metric": {"averageValue": "four"}}, "spec.autoscaling.metric.averageValue: Invalid value"),
    ({**SCALING, "metric": {"type": "Requests"}}, 'spec.autoscaling.metric.type: Unsupported value: "Requests"'),
    ({"minReplicas": 0, "maxReplicas": 2, "replicas": 0}, "spec.autoscaling.minReplicas: Invalid value: 0"),
    ({**SCALING, "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 3600}]}}},
     "periodSeconds: Invalid value: 3600"),
    ({**SCALING, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 7200}}},
     "stabilizationWindowSeconds: Invalid value: 7200"),
    ({**SCALING, "behavior": {"scaleDown": {"tolerance": "0.05"}}},
     ".spec.autoscaling.behavior.scaleDown.tolerance: field not declared in schema"),
], ids=["pods-needs-name", "builtin-refuses-name", "selector-external-only", "external-needs-target",
        "target-quantity", "type-enum", "min-at-least-1", "policy-period", "window", "unknown-field"])
def test_autoscaling_the_operator_cannot_honour_is_refused(cluster: Cluster, namespace: str,
                                                          autoscaling: dict[str, Any], message: str) -> None:
    spec = {"autoscaling": autoscaling}
    if "replicas" in autoscaling:
        spec["replicas"] = autoscaling.pop("replicas")
    with pytest.raises(RuntimeError) as err:
        apply_yaml(cluster, tgs("bad", **spec), namespace)
    assert message in str(err.value), str(err.value)


@pytest.mark.usefixtures("tgs_crd")
def test_lowering_max_replicas_while_scaled_above_it_is_accepted(cluster: Cluster, namespace: str) -> None:
    """GitOps leaves spec.replicas to the HPA: a lower maxReplicas must apply while the HPA has 4 replicas."""
    apply_yaml(cluster, tgs("scaled", replicas=4, autoscaling={"minReplicas": 1, "maxReplicas": 4}), namespace)
    [stored] = apply_yaml(cluster, tgs("scaled", replicas=4, autoscaling={"minReplicas": 1, "maxReplicas": 2}),
                          namespace)
    assert stored["spec"]["autoscaling"]["maxReplicas"] == 2


@pytest.mark.usefixtures("tgs_crd")
@pytest.mark.parametrize("autoscaling", [
    SCALING,
    {**SCALING, "metric": {"type": "QueueSize", "averageValue": "1500m"}},
    {**SCALING, "metric": {"type": "Pods", "name": "tgi_request_in_flight", "averageValue": "6"}},
    {**SCALING, "metric": {"type": "External", "name": "lb_queue", "averageValue": "3",
                           "selector": {"matchLabels": {"lb": "a"}}}},
    {**SCALING, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 15, "selectPolicy": "Max",
                                           "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]},
                             "scaleUp": {"selectPolicy": "Disabled"}}},
    {"minReplicas": 2, "maxReplicas": 4},     # spec.replicas stays the default 1: the HPA raises it to 2
], ids=["defaults", "queue-size", "pods", "external", "behavior", "replicas-below-min"])
def test_accepted_autoscaling_builds_an_hpa_the_api_server_accepts(cluster: Cluster, namespace: str,
                                                                  autoscaling: dict[str, Any]) -> None:
    [stored] = apply_yaml(cluster, tgs("good", autoscaling=autoscaling), namespace)
    body = as_live(stored, None)
    body["status"] = {"lastWarmupSeconds": 12}
    hpa = build_hpa(body)
    hpa["metadata"].pop("ownerReferences")      # the copy CRD's group is not the operator's
    cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=e2e", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump(hpa))
