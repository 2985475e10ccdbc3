"""The per-TGS alerting gauges: what tgs_series computes, that publish replaces stale series, that forget and a
reconcile of a deleted TGS remove them, and that a real reconcile publishes them.

The API client in the reconcile test is a recording stand-in that accepts every write (the real API server and a
real Prometheus scraping these gauges are exercised by e2e/test_alerts.py)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from textgen_operator.cache import ObjectCache
from textgen_operator.config import OperatorConfig
from textgen_operator.reconciler import ClosingNamespaces, Context, NodeCapacity, reconcile
from textgen_operator.rollout.model import Plan, PodView
from textgen_operator.tgs_metrics import TgsSeries, forget, publish, rollout_state, tgs_series, warming_past_timeout

NS = "metrics-ns"


def value(metric: str, name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"namespace": NS, "textgen_dev_service": name, **labels})


def pod(name: str, ready: bool = False, age: float = 10.0, failure: str | None = None,
        terminating: bool = False) -> PodView:
    return PodView(name, f"uid-{name}", 0, "rev", ready, terminating, age, failure)


def status(degraded: str = "False", reason: str = "AsExpected", ready: int = 1) -> dict[str, Any]:
    return {"readyReplicas": ready, "updatedReplicas": ready, "warmingReplicas": 0,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"},
                           {"type": "Degraded", "status": degraded, "reason": reason},
                           {"type": "Autoscaling", "status": "Unknown", "reason": "AutoscalerPending"}]}


def test_warming_past_timeout_counts_only_unready_healthy_old_pods() -> None:
    pods = (pod("old-warming", age=700), pod("young", age=10), pod("ready", ready=True, age=900),
            pod("crashing", age=900, failure="CrashLoopBackOff"), pod("stopping", age=900, terminating=True))
    assert warming_past_timeout(pods, 600) == 1
    assert warming_past_timeout(pods, 800) == 0


@pytest.mark.parametrize("phase, rolling, state", [
    ("Stable", False, "idle"), ("Scaling", False, "idle"), ("Creating", False, "idle"),
    ("WarmingUp", True, "progressing"), ("RollingUpdate", True, "progressing"), ("Paused", True, "paused"),
    ("RollingBack", True, "rolling_back"), ("RolledBack", False, "rolled_back"), ("RolloutFailed", False, "failed"),
    # A phase this module does not name: by whether the plan rolls.
    ("SomethingNew", True, "progressing"), ("SomethingNew", False, "idle"),
])
def test_rollout_state_of_each_phase(phase: str, rolling: bool, state: str) -> None:
    assert rollout_state(Plan("rev", 1, phase=phase, rolling=rolling)) == state


def test_series_of_a_tgs(make_tgs: Any) -> None:
    tgs = make_tgs(replicas=3, autoscaling={"minReplicas": 1, "maxReplicas": 5})
    series = tgs_series(tgs, status("True", "CrashLoopBackOff", ready=2), Plan("rev", 3, phase="RolledBack"),
                        (pod("a", age=100),), 60)
    by_name = {g._name: s for g, s in series.samples.items()}    # noqa: SLF001 (the gauge's metric name)
    assert by_name["textgen_operator_tgs_condition"] == {("Ready",): 1.0, ("Degraded",): 1.0,
                                                         ("Autoscaling",): -1.0}
    assert by_name["textgen_operator_tgs_condition_reason"][("Degraded", "CrashLoopBackOff")] == 1.0
    assert by_name["textgen_operator_rollout_state"][("rolled_back",)] == 1.0
    assert sum(by_name["textgen_operator_rollout_state"].values()) == 1.0
    assert by_name["textgen_operator_tgs_replicas"][("desired",)] == 3.0
    assert by_name["textgen_operator_tgs_replicas"][("ready",)] == 2.0
    assert by_name["textgen_operator_tgs_pods_warming_past_timeout"] == {(): 1.0}
    assert by_name["textgen_operator_tgs_autoscaling_max_replicas"] == {(): 5.0}


def test_no_autoscaling_no_max_series(make_tgs: Any) -> None:
    series = tgs_series(make_tgs(), status(), Plan("rev", 1), (), 60)
    assert "textgen_operator_tgs_autoscaling_max_replicas" not in {g._name for g in series.samples}  # noqa: SLF001


def test_publish_replaces_a_changed_reason_and_forget_removes_everything(make_tgs: Any) -> None:
    key = (NS, "pub")
    tgs = make_tgs("pub")
    publish(key, tgs_series(tgs, status("True", "CrashLoopBackOff"), Plan("rev", 1, phase="WarmingUp", rolling=True), (), 60))
    assert value("textgen_operator_tgs_condition", "pub", type="Degraded") == 1.0
    assert value("textgen_operator_tgs_condition_reason", "pub", type="Degraded", reason="CrashLoopBackOff") == 1.0
    assert value("textgen_operator_rollout_state", "pub", state="progressing") == 1.0
    publish(key, tgs_series(tgs, status(), Plan("rev", 1), (), 60))
    assert value("textgen_operator_tgs_condition", "pub", type="Degraded") == 0.0
    assert value("textgen_operator_tgs_condition_reason", "pub", type="Degraded", reason="CrashLoopBackOff") is None
    assert value("textgen_operator_tgs_condition_reason", "pub", type="Degraded", reason="AsExpected") == 1.0
    assert value("textgen_operator_rollout_state", "pub", state="idle") == 1.0
    forget(key)
    assert value("textgen_operator_tgs_condition", "pub", type="Degraded") is None
    assert value("textgen_operator_tgs_replicas", "pub", state="desired") is None
    forget(key)      # twice: nothing left, no error
    publish(key, TgsSeries())
    forget(key)


class AcceptingKube:
    """Accepts every write; `get` finds nothing (the TGS is only in the cache)."""

    async def exists(self, *args: Any) -> bool:
        return True

    async def get(self, *args: Any) -> None:
        return None

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    async def patch_status(self, *args: Any) -> None:
        return None

    async def create_event(self, *args: Any) -> None:
        return None

    async def delete(self, *args: Any) -> None:
        return None


def test_a_reconcile_publishes_and_a_deleted_tgs_is_forgotten(make_tgs: Any) -> None:
    tgs = make_tgs("rec")
    tgs["metadata"]["namespace"] = NS
    cache = ObjectCache()
    cache.put(tgs)
    nodes = NodeCapacity()
    nodes.update("gpu-0", {"nvidia.com/gpu": "8"})
    ctx = Context(AcceptingKube(), cache, OperatorConfig(), nodes, ClosingNamespaces())  # type: ignore[arg-type]
    asyncio.run(reconcile(ctx, (NS, "rec")))
    assert value("textgen_operator_tgs_condition", "rec", type="Ready") == 0.0     # no StatefulSet yet
    assert value("textgen_operator_tgs_condition", "rec", type="Degraded") == 0.0
    assert value("textgen_operator_tgs_replicas", "rec", state="desired") == 1.0
    cache.delete(tgs)
    asyncio.run(reconcile(ctx, (NS, "rec")))
    assert value("textgen_operator_tgs_condition", "rec", type="Ready") is None
    assert value("textgen_operator_rollout_state", "rec", state="idle") is None
