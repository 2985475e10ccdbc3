"""The HPA's behavior derived from warmup: scale-up not outrun by warming pods, scale-down not removing pods
while the ones a scale-up added are still warming."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.builders.autoscaling import build_hpa
from textgen_operator.builders.autoscaling_behavior import warmup_estimate, warmup_period_seconds
from textgen_operator.spec import tgs_spec

SCALING = {"minReplicas": 1, "maxReplicas": 8}


def behavior(tgs: dict[str, Any]) -> dict[str, Any]:
    return dict(build_hpa(tgs)["spec"]["behavior"])


@pytest.mark.parametrize("status, timeout, source, period, window", [
    ({}, 1800, "spec.rollout.warmupTimeoutSeconds", 1800, 1800),       # no pod Ready yet: the upper bound
    ({}, 120, "spec.rollout.warmupTimeoutSeconds", 150, 300),
    ({"lastWarmupSeconds": 7}, 1800, "status.lastWarmupSeconds", 45, 300),    # measured wins: 7 + 30 -> 45
    ({"lastWarmupSeconds": 8}, 1800, "status.lastWarmupSeconds", 45, 300),    # a second more: same HPA
    ({"lastWarmupSeconds": 0}, 1800, "status.lastWarmupSeconds", 30, 300),
    ({"lastWarmupSeconds": 400}, 1800, "status.lastWarmupSeconds", 435, 435),  # window >= one warmup period
    ({"lastWarmupSeconds": 5000}, 86400, "status.lastWarmupSeconds", 1800, 1800),  # the API's limits
], ids=["timeout-default", "timeout-short", "measured", "measured-jitter", "instant", "slow", "capped"])
def test_periods_follow_the_warmup(make_tgs: Any, status: dict[str, Any], timeout: int, source: str, period: int,
                                   window: int) -> None:
    tgs = make_tgs(autoscaling=SCALING, rollout={"warmupTimeoutSeconds": timeout})
    tgs["status"] = status
    assert warmup_estimate(tgs_spec(tgs), status).source == source
    assert warmup_period_seconds(warmup_estimate(tgs_spec(tgs), status)) == period
    up, down = behavior(tgs)["scaleUp"], behavior(tgs)["scaleDown"]
    # Up: one step of max(4 pods, 100%) per warmup period, no waiting before it.
    assert up == {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                  "policies": [{"type": "Pods", "value": 4, "periodSeconds": period},
                               {"type": "Percent", "value": 100, "periodSeconds": period}]}
    # Down: the highest recommendation of a window at least one warmup period long, then a pod a minute.
    assert down == {"stabilizationWindowSeconds": window, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}
    assert window >= period


def test_a_direction_the_user_gives_replaces_only_that_direction(make_tgs: Any) -> None:
    mine = {"stabilizationWindowSeconds": 15, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}
    tgs = make_tgs(autoscaling={**SCALING, "behavior": {"scaleDown": mine}})
    tgs["status"] = {"lastWarmupSeconds": 7}
    derived = behavior(tgs)
    assert derived["scaleDown"] == mine
    assert derived["scaleUp"]["policies"][0]["periodSeconds"] == 45


def test_a_disabled_direction_is_kept(make_tgs: Any) -> None:
    tgs = make_tgs(autoscaling={**SCALING, "behavior": {"scaleDown": {"selectPolicy": "Disabled"}}})
    assert behavior(tgs)["scaleDown"] == {"selectPolicy": "Disabled"}
