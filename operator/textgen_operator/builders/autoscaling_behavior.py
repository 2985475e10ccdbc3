"""How fast the autoscaler may move, derived from how long a pod takes to warm up. Pure.

A new pod serves nothing for its whole warmup (download, load, warmup passes), while the load that asked for it
keeps queueing on the Ready pods. Two mistakes follow if the HPA's defaults (add max(4 pods, 100%) every 15 s;
remove after 300 s of lower recommendations) are kept for pods that take minutes to warm:

* scale-up outruns warmup: the queue keeps growing while the first new pods warm, so every 15 s the HPA asks for
  more, and replicas overshoot. The scale-up policies here allow max(4 pods, 100%) per *warmup period*: one step,
  then the HPA waits until the pods it added can take load before it adds more.
* scale-down removes pods while others are still warming: a stabilization window shorter than warmup lets a
  lower recommendation (the Ready pods drained part of the queue meanwhile) remove pods before the new ones take
  load. The HPA scales down to the *highest* recommendation of its window, so a window of at least one warmup
  period keeps every replica that a scale-up asked for until the pods it created are warm. Then one pod a minute
  at most: a removed pod costs a whole warmup to get back.

The warmup period is the measured `status.lastWarmupSeconds` (the pod that became Ready last) when the TGS has
one, else `spec.rollout.warmupTimeoutSeconds` (the longest a pod may take: safe, but slow) until the first pod is
Ready; plus the metric lag (a scrape and an HPA sync) and rounded up to 15 s steps, so that warmups differing by
a second or two do not rewrite the HPA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from textgen_operator.names import Body
from textgen_operator.spec import TGSSpec

METRIC_LAG_SECONDS = 30            # Prometheus scrape interval (15 s) + HPA sync period (15 s)
PERIOD_STEP_SECONDS = 15
MAX_POLICY_PERIOD_SECONDS = 1800   # the HPA API's limit on HPAScalingPolicy.periodSeconds
MAX_STABILIZATION_SECONDS = 3600   # ... and on stabilizationWindowSeconds
MIN_SCALE_DOWN_WINDOW_SECONDS = 300    # the HPA's own default: noisy load must not remove pods sooner
SCALE_UP_PODS = 4                  # the HPA's default scale-up policy, per warmup period instead of per 15 s
SCALE_UP_PERCENT = 100
SCALE_DOWN_PODS_PER_MINUTE = 1


@dataclass(frozen=True)
class Warmup:
    """The warmup estimate and where it came from (for docs and status messages)."""

    seconds: float
    source: str      # "status.lastWarmupSeconds" | "spec.rollout.warmupTimeoutSeconds"


def warmup_estimate(spec: TGSSpec, status: Body) -> Warmup:
    """The measured warmup when one exists, else the configured upper bound."""
    measured = status.get("lastWarmupSeconds")
    if isinstance(measured, (int, float)) and not isinstance(measured, bool) and measured >= 0:
        return Warmup(float(measured), "status.lastWarmupSeconds")
    return Warmup(float(spec.rollout.warmup_timeout_seconds), "spec.rollout.warmupTimeoutSeconds")


def warmup_period_seconds(warmup: Warmup) -> int:
    """Seconds from a scale-up decision until its pods can show in the metric, in 15 s steps, at most 1800."""
    steps = math.ceil((warmup.seconds + METRIC_LAG_SECONDS) / PERIOD_STEP_SECONDS)
    return min(MAX_POLICY_PERIOD_SECONDS, steps * PERIOD_STEP_SECONDS)


def build_scale_up(period: int) -> Body:
    return {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": SCALE_UP_PODS, "periodSeconds": period},
                         {"type": "Percent", "value": SCALE_UP_PERCENT, "periodSeconds": period}]}


def build_scale_down(period: int) -> Body:
    window = min(MAX_STABILIZATION_SECONDS, max(MIN_SCALE_DOWN_WINDOW_SECONDS, period))
    return {"stabilizationWindowSeconds": window, "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": SCALE_DOWN_PODS_PER_MINUTE, "periodSeconds": 60}]}


def build_behavior(spec: TGSSpec, status: Body) -> Body:
    """The HPA's behavior: each direction spec.autoscaling.behavior gives is used as given, the others derived."""
    assert spec.autoscaling is not None
    period = warmup_period_seconds(warmup_estimate(spec, status))
    derived = {"scaleUp": build_scale_up(period), "scaleDown": build_scale_down(period)}
    return {direction: dict(spec.autoscaling.behavior.get(direction) or default)
            for direction, default in derived.items()}
