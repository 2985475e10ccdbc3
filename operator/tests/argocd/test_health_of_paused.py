"""spec.rollout.paused set together with a spec change, before any pod moved: the operator's own status code
(rollout planner, words, build_status) on a real Healthy TGS of health_test.yaml, read by health.lua on Argo CD's
runtime. It said Stable and Argo CD showed Healthy while every pod still ran the old revision; a held revision is
Suspended, as Argo CD shows a paused Rollout or Deployment."""
from __future__ import annotations

import copy
import pathlib
from collections.abc import Callable
from typing import Any

import yaml

from textgen_operator.builders import build_desired
from textgen_operator.config import OperatorConfig
from textgen_operator.rollout.step import plan_step
from textgen_operator.status import build_status

ROOT = pathlib.Path(__file__).resolve().parents[3]
HEALTH_DIR = ROOT / "argocd" / "resource_customizations" / "textgen.dev" / "TextGenerationService"
BASE = HEALTH_DIR / "testdata" / "create-healthy-allreplicasready.yaml"
NOW = 1_800_000_000.0
CONFIG = OperatorConfig()
HealthOf = Callable[[dict[str, Any]], dict[str, str]]   # the conftest's health_of fixture



def running_service(tgs: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The StatefulSet and its one Ready pod, as the operator left them for the base TGS (good revision
    recorded)."""
    first = plan_step(tgs, build_desired(tgs, CONFIG), None, [], NOW)
    sts = next(o for o in first.desired if o["kind"] == "StatefulSet")
    sts["metadata"].update({"generation": 1, "uid": "sts-uid"})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"{tgs['metadata']['name']}-0", "uid": "p0", "namespace": tgs["metadata"]["namespace"],
        "creationTimestamp": "2026-11-30T21:44:52Z",
        "annotations": dict(sts["spec"]["template"]["metadata"]["annotations"])},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    steady = plan_step(tgs, build_desired(tgs, CONFIG), sts, [pod], NOW)
    live = next(o for o in steady.desired if o["kind"] == "StatefulSet")
    live = {**live, "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
    return live, [pod]


def health_after(health_of: HealthOf, change: dict[str, Any]) -> dict[str, str]:
    """health.lua's answer for the base TGS with `change` merged into spec.rollout / spec, as the operator's
    status for it says."""
    base: dict[str, Any] = yaml.safe_load(BASE.read_text())
    sts, pods = running_service(base)
    tgs = copy.deepcopy(base)
    tgs["metadata"]["generation"] = 2
    tgs["spec"].update(change)
    step = plan_step(tgs, build_desired(tgs, CONFIG), sts, pods, NOW)
    tgs["status"] = build_status(tgs, sts, pods, step.problems, "2026-11-30T21:46:00Z", rollout=step.plan)
    return health_of(tgs)


def test_a_paused_spec_change_is_suspended_not_healthy(health_of: HealthOf) -> None:
    held = health_after(health_of, {"podAnnotations": {"team": "b"}, "rollout": {"paused": True}})
    assert held["status"] == "Suspended", held
    assert "Paused: spec.rollout.paused holds revision" in held["message"], held
    assert "has not started" in held["message"] and "stay at revision" in held["message"], held


def test_the_same_change_unpaused_is_progressing(health_of: HealthOf) -> None:
    rolling = health_after(health_of, {"podAnnotations": {"team": "b"}})
    assert rolling["status"] == "Progressing" and "surge pod(s)" in rolling["message"], rolling
    assert "0 pod(s) of revision" not in rolling["message"], rolling      # it said "0 pod(s) ... warming up"


def test_paused_with_nothing_to_hold_stays_healthy(health_of: HealthOf) -> None:
    idle = health_after(health_of, {"rollout": {"paused": True}})
    assert idle == {"status": "Healthy", "message": "AllReplicasReady: 1/1 replicas ready"}, idle
