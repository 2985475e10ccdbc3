"""The TGS's Autoscaling condition, from its autoscaler's own status, and the autoscaling problems. Pure.

The condition repeats the HorizontalPodAutoscaler's own reason and message (AbleToScale, ScalingActive,
ScalingLimited), or the KEDA ScaledObject's (Ready, Active):
  True / <ScalingActive reason, e.g. ValidMetricFound>      the HPA computes replicas from the metric
  True / TooManyReplicas                                   limited: it wants more than maxReplicas
  True / ScaleOverridden                                   spec.replicas was set by someone else (kubectl scale)
  False / <e.g. FailedGetExternalMetric, FailedGetScale>   it cannot get metrics or cannot scale
  Unknown / AutoscalerPending                              created, no status yet
Only what changes when scaling changes is shown (no current metric value: that would rewrite the status every
HPA sync, 15 s, for nothing).
"""
from __future__ import annotations

from textgen_operator.builders.autoscaling import keda_usable
from textgen_operator.builders.autoscaling_metrics import BUILTIN_METRICS
from textgen_operator.config import OperatorConfig
from textgen_operator.names import Body
from textgen_operator.problems import Problem
from textgen_operator.spec import TGSSpec
from textgen_operator.status import Condition

AUTOSCALING = "Autoscaling"
# The HPA controller writes spec.replicas through the scale subresource as the controller manager.
AUTOSCALER_MANAGERS = ("kube-controller-manager",)


def autoscaling_problems(spec: TGSSpec, config: OperatorConfig) -> list[Problem]:
    """spec.autoscaling that this operator's provider cannot honour. Not blocking: the pods serve at
    spec.replicas; only the autoscaling is missing, and the user is told why."""
    autoscaling = spec.autoscaling
    if autoscaling is None or config.autoscaling_provider != "keda" or keda_usable(autoscaling.metric):
        return []
    return [Problem("AutoscalingMetricUnsupported",
                    f"spec.autoscaling.metric.type={autoscaling.metric.type}: this operator runs with "
                    "--autoscaling-provider keda, whose Prometheus trigger needs a query the operator only has for "
                    f"the built-in types {', '.join(BUILTIN_METRICS)}; use one of them, or install the operator with "
                    "autoscaling.provider=prometheus-adapter (an HPA on the custom/external metrics API)",
                    blocking=False)]


def _conditions(autoscaler: Body) -> dict[str, Body]:
    return {str(c.get("type")): c for c in autoscaler.get("status", {}).get("conditions") or []}


def replicas_managers(tgs: Body) -> set[str]:
    """Field managers that own spec.replicas (the last writer of it, for Update operations)."""
    managers = set()
    for entry in tgs["metadata"].get("managedFields") or []:
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            managers.add(str(entry.get("manager", "")))
    return managers


def scale_overridden(tgs: Body, spec: TGSSpec, autoscaler: Body) -> str | None:
    """A message when spec.replicas was last set by someone other than the autoscaler and differs from what it
    wants (`kubectl scale tgs` while autoscaling is on), else None."""
    desired = autoscaler.get("status", {}).get("desiredReplicas")
    managers = replicas_managers(tgs)
    # 0: the HPA has not computed a count yet (minReplicas is at least 1).
    if desired is None or int(desired) < 1 or int(desired) == spec.replicas or not managers:
        return None
    if any(m.startswith(AUTOSCALER_MANAGERS) for m in managers):
        return None
    return (f"spec.replicas={spec.replicas} was set by {', '.join(sorted(managers))} while spec.autoscaling is on: "
            f"the autoscaler overrides it (it wants {desired}). Change spec.autoscaling.minReplicas/maxReplicas "
            "instead, or remove spec.autoscaling to scale by hand")


def _hpa_condition(name: str, conditions: dict[str, Body], status: Body) -> Condition:
    able, active, limited = (conditions.get(t, {}) for t in ("AbleToScale", "ScalingActive", "ScalingLimited"))
    for broken in (able, active):
        if broken.get("status") == "False":
            return Condition(AUTOSCALING, "False", str(broken.get("reason", "Unknown")),
                             f"HorizontalPodAutoscaler {name}: {broken.get('message', '')}")
    counts = f"{status.get('currentReplicas', 0)} replicas, desired {status.get('desiredReplicas', 0)}"
    # Only the upper limit is news: TooFewReplicas is every idle TGS at minReplicas.
    if limited.get("status") == "True" and limited.get("reason") == "TooManyReplicas":
        return Condition(AUTOSCALING, "True", "TooManyReplicas",
                         f"HorizontalPodAutoscaler {name} ({counts}): {limited.get('message', '')}; raise "
                         "spec.autoscaling.maxReplicas if the queue stays over target")
    return Condition(AUTOSCALING, "True", str(active.get("reason", "ScalingActive")),
                     f"HorizontalPodAutoscaler {name} ({counts}): {active.get('message', '')}")


def _scaled_object_condition(name: str, conditions: dict[str, Body]) -> Condition:
    ready = conditions.get("Ready", {})
    if ready.get("status") != "True":
        return Condition(AUTOSCALING, "False", str(ready.get("reason") or "ScaledObjectNotReady"),
                         f"ScaledObject {name}: {ready.get('message', 'not ready')}")
    active = conditions.get("Active", {})
    return Condition(AUTOSCALING, "True", str(active.get("reason") or "ScaledObjectReady"),
                     f"ScaledObject {name}: {active.get('message') or ready.get('message', '')}")


def autoscaling_condition(tgs: Body, spec: TGSSpec, autoscaler: Body | None) -> Condition | None:
    """The Autoscaling condition (None when spec.autoscaling is absent: the condition goes away with it)."""
    if spec.autoscaling is None:
        return None
    if autoscaler is None or not _conditions(autoscaler):
        kind = autoscaler["kind"] if autoscaler else "autoscaler"
        # The HPA controller is part of every control plane; KEDA's operator is not: say who writes the status.
        waits_for = " (KEDA's operator writes it: if this lasts, check that KEDA runs in the cluster)" \
            if kind == "ScaledObject" else ""
        return Condition(AUTOSCALING, "Unknown", "AutoscalerPending",
                         f"the {kind} has not reported a status yet{waits_for}")
    name = autoscaler["metadata"]["name"]
    if autoscaler["kind"] == "ScaledObject":
        return _scaled_object_condition(name, _conditions(autoscaler))
    condition = _hpa_condition(name, _conditions(autoscaler), autoscaler.get("status", {}))
    # Only an HPA that computes replicas overrides anything; one that cannot is the news then.
    overridden = scale_overridden(tgs, spec, autoscaler) if condition.status == "True" else None
    return Condition(AUTOSCALING, "True", "ScaleOverridden", overridden) if overridden else condition
