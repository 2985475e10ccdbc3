"""Per-TGS gauges for alerting (conditions, rollout state, replicas, pods warming past their timeout).

`tgs_series` is pure: a TGS, the status the reconcile just built, the rollout plan and the pods in; the samples
out. `publish` puts them into the operator's registry and removes the series of this TGS that are no longer
current (a condition reason or rollout state that changed), `forget` removes all of them when the TGS is gone,
so every series describes a TGS that exists, as it is now.

Labels: `namespace` and `textgen_dev_service` (the TGS name), spelled as the server pods' series are labelled
(hack/cluster's Prometheus, the chart's PodMonitor), so alert rules join and route on the same two labels.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import Gauge

from textgen_operator.metrics import (TGS_AUTOSCALING_MAX, TGS_CONDITION, TGS_CONDITION_REASON, TGS_REPLICAS,
                                      TGS_ROLLOUT_STATE, TGS_WARMING_PAST_TIMEOUT)
from textgen_operator.names import Body
from textgen_operator.rollout.model import Plan, PodView

Key = tuple[str, str]                # (namespace, name)
Labels = tuple[str, ...]             # the label values after namespace and textgen_dev_service

CONDITION_VALUES = {"True": 1.0, "False": 0.0, "Unknown": -1.0}
# The planner's phases (the Progressing condition's reasons) that name a rollout state of their own; any other
# phase is `progressing` while the plan rolls and `idle` otherwise (Creating, Stable, Scaling, and phases added
# later, e.g. a deferred scale-down, without a change here).
OWN_ROLLOUT_STATES = {"Paused": "paused", "RollingBack": "rolling_back", "RolledBack": "rolled_back",
                      "RolloutFailed": "failed"}
ALL_ROLLOUT_STATES = ("idle", "progressing", "paused", "rolling_back", "rolled_back", "failed")


@dataclass(frozen=True)
class TgsSeries:
    """Every sample of one TGS, per gauge: {label values after (namespace, name): value}."""

    samples: Mapping[Gauge, Mapping[Labels, float]] = field(default_factory=dict)


def warming_past_timeout(pods: tuple[PodView, ...], timeout_seconds: float) -> int:
    """Pods that are not Ready, not failing and not stopping, created longer ago than the warmup timeout (the
    planner's own test for a failed revision; here for every pod, also those a scale-up added)."""
    return sum(1 for p in pods if not p.ready and not p.terminating and p.failure is None
               and p.age_seconds > timeout_seconds)


def rollout_state(plan: Plan) -> str:
    """idle, progressing, paused, rolling_back, rolled_back or failed."""
    return OWN_ROLLOUT_STATES.get(plan.phase) or ("progressing" if plan.rolling else "idle")


def tgs_series(tgs: Body, status: Body, plan: Plan, pods: tuple[PodView, ...],
               warmup_timeout_seconds: float) -> TgsSeries:
    """The samples of one TGS, from what this reconcile computed."""
    conditions = [c for c in status.get("conditions", []) if c.get("type")]
    state = rollout_state(plan)
    spec = tgs.get("spec", {})
    samples: dict[Gauge, dict[Labels, float]] = {
        TGS_CONDITION: {(c["type"],): CONDITION_VALUES.get(c.get("status", ""), -1.0) for c in conditions},
        TGS_CONDITION_REASON: {(c["type"], str(c.get("reason", ""))): 1.0 for c in conditions},
        TGS_ROLLOUT_STATE: {(s,): 1.0 if s == state else 0.0 for s in ALL_ROLLOUT_STATES},
        TGS_REPLICAS: {
            ("desired",): float(spec.get("replicas", 1)),
            ("ready",): float(status.get("readyReplicas", 0)),
            ("updated",): float(status.get("updatedReplicas", 0)),
            ("warming",): float(status.get("warmingReplicas", 0)),
        },
        TGS_WARMING_PAST_TIMEOUT: {(): float(warming_past_timeout(pods, warmup_timeout_seconds))},
    }
    autoscaling = spec.get("autoscaling")
    if autoscaling and autoscaling.get("maxReplicas") is not None:
        samples[TGS_AUTOSCALING_MAX] = {(): float(autoscaling["maxReplicas"])}
    return TgsSeries(samples)


# What publish() last wrote per TGS, so a label set that is no longer current can be removed.
_published: dict[Key, dict[Gauge, set[Labels]]] = {}


def publish(key: Key, series: TgsSeries) -> None:
    """Sets this TGS's samples and removes its series that this reconcile no longer produced."""
    before = _published.get(key, {})
    now: dict[Gauge, set[Labels]] = {}
    for gauge, samples in series.samples.items():
        for labels, value in samples.items():
            gauge.labels(*key, *labels).set(value)
        now[gauge] = set(samples)
    for gauge, labels_before in before.items():
        for labels in labels_before - now.get(gauge, set()):
            gauge.remove(*key, *labels)
    _published[key] = now


def forget(key: Key) -> None:
    """Removes every series of a TGS that was deleted (or whose namespace is going away)."""
    for gauge, labels_before in _published.pop(key, {}).items():
        for labels in labels_before:
            gauge.remove(*key, *labels)
