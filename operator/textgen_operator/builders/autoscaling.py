"""The autoscaler of one TGS: an autoscaling/v2 HorizontalPodAutoscaler on the TGS's scale subresource, or a KEDA
ScaledObject with a Prometheus trigger (operator flag --autoscaling-provider). Pure.

The signal (why External + AverageValue, see operator/README.md, Autoscaling): the built-in metrics are the sum
over the TGS's *Ready* pods of their queue (or queue + running batch), served as an external metric. For an
External metric with an AverageValue target the HPA's replica calculator asks for ceil(sum / target) replicas,
whatever the number of pods that exist: a warming pod (no queue yet: the Service sends it nothing) adds no
capacity and lowers no average. A Pods metric would be averaged over the pods that report it, with pods missing
a value counted as 0 on a scale-up and as exactly the target on a scale-down.
"""
from __future__ import annotations

from textgen_operator import GROUP, KIND, VERSION
from textgen_operator.builders.autoscaling_behavior import build_behavior
from textgen_operator.builders.autoscaling_metrics import (BUILTIN_METRICS, SERVICE_SERIES_LABEL,
                                                            builtin_promql)
from textgen_operator.config import OperatorConfig
from textgen_operator.names import Body, child_metadata, tgs_name, tgs_namespace
from textgen_operator.spec import AutoscalingSpec, MetricSpec, tgs_spec

HPA_KIND = "autoscaling/v2/HorizontalPodAutoscaler"
SCALED_OBJECT_KIND = "keda.sh/v1alpha1/ScaledObject"
AUTOSCALER_KINDS = (HPA_KIND, SCALED_OBJECT_KIND)
KEDA_POLLING_SECONDS = 15       # the HPA controller's default sync period: the same cadence either way


def scale_target_ref(tgs: Body) -> Body:
    """The TGS itself: the HPA reads and writes replicas through its scale subresource."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": tgs_name(tgs)}


def build_metric(tgs: Body, metric: MetricSpec) -> Body:
    """One autoscaling/v2 MetricSpec."""
    target = {"type": "AverageValue", "averageValue": metric.average_value}
    if metric.type == "Pods":
        return {"type": "Pods", "pods": {"metric": {"name": metric.name}, "target": target}}
    if metric.type == "External":
        identifier: Body = {"name": metric.name}
        if metric.match_labels:
            identifier["selector"] = {"matchLabels": dict(metric.match_labels)}
        return {"type": "External", "external": {"metric": identifier, "target": target}}
    # Built-in: the adapter's external metric, narrowed to this TGS's pods by their series label.
    selector = {"matchLabels": {SERVICE_SERIES_LABEL: tgs_name(tgs)}}
    return {"type": "External", "external": {"metric": {"name": BUILTIN_METRICS[metric.type], "selector": selector},
                                             "target": target}}


def build_hpa(tgs: Body) -> Body:
    """The HorizontalPodAutoscaler of a TGS with spec.autoscaling (same name as the TGS)."""
    spec = tgs_spec(tgs)
    autoscaling = spec.autoscaling
    assert autoscaling is not None, "build_hpa needs spec.autoscaling"
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(tgs, tgs_name(tgs)),
        "spec": {"scaleTargetRef": scale_target_ref(tgs),
                 "minReplicas": autoscaling.min_replicas, "maxReplicas": autoscaling.max_replicas,
                 "metrics": [build_metric(tgs, autoscaling.metric)],
                 "behavior": build_behavior(spec, tgs.get("status") or {})},
    }


def _keda_trigger(tgs: Body, autoscaling: AutoscalingSpec, config: OperatorConfig) -> Body:
    query = builtin_promql(autoscaling.metric.type, tgs_namespace(tgs), tgs_name(tgs))
    return {"type": "prometheus", "metricType": "AverageValue",
            "metadata": {"serverAddress": config.keda_prometheus_address, "query": query,
                         "threshold": autoscaling.metric.average_value,
                         # No Ready pod, no series: that is a queue of 0, not an error.
                         "ignoreNullValues": "true"}}


def build_scaled_object(tgs: Body, config: OperatorConfig) -> Body:
    """The KEDA ScaledObject of a TGS with spec.autoscaling (built-in metric types only; problems.py refuses
    Pods/External with KEDA). KEDA makes the HPA from it, with the same behavior."""
    spec = tgs_spec(tgs)
    autoscaling = spec.autoscaling
    assert autoscaling is not None, "build_scaled_object needs spec.autoscaling"
    behavior = build_behavior(spec, tgs.get("status") or {})
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": child_metadata(tgs, tgs_name(tgs)),
        "spec": {"scaleTargetRef": scale_target_ref(tgs),
                 "minReplicaCount": autoscaling.min_replicas, "maxReplicaCount": autoscaling.max_replicas,
                 "pollingInterval": KEDA_POLLING_SECONDS,
                 "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
                 "triggers": [_keda_trigger(tgs, autoscaling, config)]},
    }


def keda_usable(metric: MetricSpec) -> bool:
    """KEDA's Prometheus trigger needs a PromQL query: the operator has one for its built-in types only."""
    return metric.type in BUILTIN_METRICS


def build_autoscaler(tgs: Body, config: OperatorConfig) -> Body | None:
    """The autoscaler object the TGS needs, or None (no spec.autoscaling, or a combination problems.py refuses)."""
    autoscaling = tgs_spec(tgs).autoscaling
    if autoscaling is None:
        return None
    if config.autoscaling_provider == "keda":
        if not keda_usable(autoscaling.metric) or not config.keda_prometheus_address:
            return None
        return build_scaled_object(tgs, config)
    return build_hpa(tgs)


def stale_autoscaler_kinds(desired: Body | None) -> tuple[str, ...]:
    """The autoscaler kinds (apiVersion/kind) that must not exist for this TGS: all but the desired one. The
    reconciler deletes ours among them: this is how removing spec.autoscaling hands spec.replicas back."""
    wanted = f"{desired['apiVersion']}/{desired['kind']}" if desired else None
    return tuple(kind for kind in AUTOSCALER_KINDS if kind != wanted)
