"""Argo CD's health of a real TGS (real operator with the chart's RBAC, real pods on the node agent), evaluated by
argocd/'s health.lua on Argo CD's Lua runtime (hack/tools/argocd-lua) for every version a watch delivers:
- create: Progressing -> Healthy;
- every spec change is Progressing until the operator has observed it (the first new version is checked), so
  health never shows a stale Healthy right after a sync;
- a revision the launcher refuses: Degraded (RolledBack, with the launcher's words), never Healthy on the way;
- a fixed spec: Progressing, Suspended while spec.rollout.paused holds the rollout, Progressing -> Healthy after;
- an autoscaler that cannot get its metric (an External metric no adapter serves): Degraded;
- replicas 0: Suspended;
- and the operator wrote nothing of the TGS but its status (audit log), so Argo CD sees no drift.
One TGS, two warmups. TEXTGEN_ARGOCD_CAPTURE=<dir> saves the objects as argocd/'s testdata (argocd/README.md).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from e2e.argocd_health import HealthWatch
from e2e.harness import REPO_ROOT, Cluster, apply_yaml, wait_for
from e2e.operator_run import Operator, get_tgs
from e2e.real_pods import RELEASE, SYSTEM_NS, on_real_pods, operator, tiny_model

__all__ = ["operator"]      # fixture
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
NAME = "health"
OPERATOR_USER = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
FIXED = {"podAnnotations": {"e2e.textgen.dev/try": "fixed"}}
UNSERVED = {"type": "External", "name": "e2e_argocd_unserved_metric", "averageValue": "1"}


def health_tgs(**spec: Any) -> str:
    """The CPU example on real pods with the tiny Llama, one replica, with `spec` fields added."""
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"].update({"kvCacheMemory": "64Mi", **spec})
    return str(yaml.safe_dump(on_real_pods(body, tiny_model("llama"))))


def step(cluster: Cluster, namespace: str, watch: HealthWatch, stage: str, body: str,
         reached: Callable[[dict[str, str]], bool], timeout: float) -> list[str]:
    """Applies `body` as `stage` and waits until the newest health meets `reached`; returns the health statuses
    of the new generation's versions (repeats folded), the first checked to be Progressing because the operator
    had not observed that generation yet."""
    generation = int(get_tgs(cluster, namespace, NAME)["metadata"]["generation"]) + 1 if stage != "create" else 1
    watch.begin(stage, generation)
    apply_yaml(cluster, body, namespace)
    wait_for(lambda: (h := watch.latest()) is not None and reached(h), timeout, f"{stage}: health reached")
    first = watch.own()[0]
    waiting = "Waiting for the textgen operator" if first.observed is None else "has not observed generation"
    assert first.observed is None or first.observed < first.generation, first
    assert first.health["status"] == "Progressing" and waiting in first.health["message"], first
    return watch.statuses()


def is_(status: str, text: str = "") -> Callable[[dict[str, str]], bool]:
    return lambda h: h["status"] == status and text in h["message"]


def test_health_follows_a_real_tgs_through_its_states(cluster: Cluster, operator: Operator, namespace: str) -> None:
    start = time.time()
    with HealthWatch(cluster, namespace, NAME) as watch:
        assert step(cluster, namespace, watch, "create", health_tgs(), is_("Healthy"), 300) \
            == ["Progressing", "Healthy"], watch.seen
        assert "1/1 replicas ready" in str(watch.latest())

        seq = step(cluster, namespace, watch, "refused", health_tgs(args=["--no-such-flag"]),
                   is_("Degraded", "RolledBack"), 240)
        assert seq[0] == "Progressing" and "Healthy" not in seq, watch.seen
        assert "unrecognized arguments: --no-such-flag" in str(watch.latest())
        # The refused revision's crash-looping surge pod goes away before the next change (else Degraded there).
        wait_for(lambda: get_tgs(cluster, namespace, NAME)["status"].get("replicas") == 1, 120, "the surge pod gone")

        seq = step(cluster, namespace, watch, "fixed", health_tgs(**FIXED), is_("Progressing", "WarmingUp"), 120)
        assert seq == ["Progressing"], watch.seen
        seq = step(cluster, namespace, watch, "paused", health_tgs(rollout={"paused": True}, **FIXED),
                   is_("Suspended", "spec.rollout.paused"), 60)
        assert seq == ["Progressing", "Suspended"], watch.seen
        seq = step(cluster, namespace, watch, "resumed", health_tgs(**FIXED), is_("Healthy"), 300)
        assert seq[0] == "Progressing" and seq[-1] == "Healthy" and "Degraded" not in seq, watch.seen

        # A metric nothing serves: the HPA cannot get it, whether or not an earlier test left the metrics pipeline up.
        seq = step(cluster, namespace, watch, "autoscaling",
                   health_tgs(autoscaling={"minReplicas": 1, "maxReplicas": 2, "metric": UNSERVED}, **FIXED),
                   is_("Degraded", "Autoscaling "), 120)
        assert seq[0] == "Progressing", watch.seen

        seq = step(cluster, namespace, watch, "scaled-to-zero", health_tgs(replicas=0, **FIXED),
                   is_("Suspended", "ScaledToZero"), 120)
        assert seq[0] == "Progressing", watch.seen
    # The operator never writes a TGS but its status: what Argo CD diffs (spec, metadata) is the user's alone.
    writes = [(e["verb"], e["objectRef"].get("subresource")) for e in cluster.audit_events(since=start)
              if e["user"]["username"] == OPERATOR_USER and e["verb"] in WRITE_VERBS
              and e["objectRef"].get("resource") == "textgenerationservices"]
    assert writes and all(sub == "status" for _, sub in writes), writes
