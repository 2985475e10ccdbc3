"""The operator's own Autoscaling condition (autoscaling_status.autoscaling_condition, from HPA bodies as the HPA
controller writes them) read by health.lua on Argo CD's runtime: the states an e2e run without a metrics pipeline
cannot produce (limited at maxReplicas, spec.replicas overridden, autoscaler pending, cannot scale). The TGS is
the real autoscaling object of health_test.yaml with its Autoscaling condition replaced."""
from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest
import yaml

from textgen_operator.autoscaling_status import autoscaling_condition
from textgen_operator.spec import tgs_spec

ROOT = pathlib.Path(__file__).resolve().parents[3]
HEALTH_DIR = ROOT / "argocd" / "resource_customizations" / "textgen.dev" / "TextGenerationService"
BASE = HEALTH_DIR / "testdata" / "autoscaling-degraded-autoscaling-failedgetexternalmetric.yaml"

ABLE = ("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
CANNOT = ("AbleToScale", "False", "FailedGetScale", "the HPA controller was unable to get the target's current scale")
ACTIVE = ("ScalingActive", "True", "ValidMetricFound",
          "the HPA was able to successfully calculate a replica count from external metric textgen_ready_queue_size")
AT_MAX = ("ScalingLimited", "True", "TooManyReplicas",
          "the desired replica count is more than the maximum replica count")
WITHIN = ("ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the acceptable range")


def hpa(conditions: list[tuple[str, str, str, str]], current: int = 1, desired: int = 1) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "health"},
            "status": {"currentReplicas": current, "desiredReplicas": desired,
                       "conditions": [{"type": t, "status": s, "reason": r, "message": m}
                                      for t, s, r, m in conditions]}}



def with_autoscaler(autoscaler: dict[str, Any] | None, managers: tuple[str, ...] = ()) -> dict[str, Any]:
    tgs: dict[str, Any] = yaml.safe_load(BASE.read_text())
    tgs["metadata"]["managedFields"] = [{"manager": m, "operation": "Update",
                                         "fieldsV1": {"f:spec": {"f:replicas": {}}}} for m in managers]
    condition = autoscaling_condition(tgs, tgs_spec(tgs), autoscaler)
    assert condition is not None
    others = [c for c in tgs["status"]["conditions"] if c["type"] != "Autoscaling"]
    tgs["status"]["conditions"] = others + [{**asdict(condition), "observedGeneration": tgs["metadata"]["generation"]}]
    return tgs


@pytest.mark.parametrize("autoscaler, managers, status, in_message", [
    (hpa([ABLE, ACTIVE, AT_MAX], 2, 2), (), "Healthy", "Autoscaling TooManyReplicas: HorizontalPodAutoscaler health"),
    (hpa([ABLE, ACTIVE, WITHIN], 3, 3), ("argocd-controller",), "Healthy", "Autoscaling ScaleOverridden: "
                                                                            "spec.replicas=1 was set by argocd"),
    (hpa([ABLE, ACTIVE, WITHIN], 3, 3), ("kube-controller-manager",), "Healthy", "AllReplicasReady"),
    (None, (), "Progressing", "Autoscaling AutoscalerPending"),
    (hpa([CANNOT, ACTIVE]), (), "Degraded", "Autoscaling FailedGetScale: HorizontalPodAutoscaler health"),
])
def test_health_of_each_autoscaling_state(autoscaler: dict[str, Any] | None, managers: tuple[str, ...],
                                          status: str, in_message: str,
                                          health_of: Callable[[dict[str, Any]], dict[str, str]]) -> None:
    health = health_of(with_autoscaler(autoscaler, managers))
    assert health["status"] == status and in_message in health["message"], health
    if status == "Healthy" and in_message == "AllReplicasReady":
        assert "Autoscaling" not in health["message"], health     # nothing to say when it just works
