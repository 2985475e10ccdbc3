"""Warmup-aware rolling upgrades on real pods (hack/node-agent: real `textgen-launcher` processes at loopback pod
IPs) under continuous load sent to the Ready pods as kube-proxy would (e2e/ready_pods_load.py).

- A spec change rolls all 3 pods with maxSurge 1: no request fails, the Ready count seen by a pod watch never
  drops below 3, every old pod stops only after one more new pod is Ready than old pods stopped before it,
  streams in flight when their pod began terminating end with every token (drain), never more than 4 pods.
- A revision the launcher refuses (an argument it does not know) is rolled back: no request fails, capacity
  kept, the TGS Degraded/RolledBack with the launcher's own words; a fixed spec then rolls forward while the
  operator is SIGKILLed and started again mid-rollout and spec.replicas changes 3 -> 4 (what the HPA does to the
  scale subresource; issue 11's HPA writes the same field), never above replicas + maxSurge pods.
"""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import REPO_ROOT, Cluster, apply_yaml, wait_for
from e2e.operator_run import (Operator, condition, get_tgs, install_chart, run_operator, token_kubeconfig,
                              wait_ready)
from e2e.ready_pods_load import Load, ReadyPods, service_selector
from e2e.real_pods import RELEASE, SYSTEM_NS, on_real_pods, pod_log, tiny_model

READY_TIMEOUT = 300
ROLLOUT_TIMEOUT = 600       # a whole rollout: 4 warmups in turn, each 20-90 s on 2 shared cores
TEMPLATE_HASH = "textgen.dev/template-hash"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def operator_setup(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The chart installed; (the kubeconfig of its ServiceAccount, a work dir): each test runs the operator."""
    workdir = tmp_path_factory.mktemp("rollout-operator")
    install_chart(cluster, RELEASE, SYSTEM_NS)
    yield token_kubeconfig(cluster, workdir / "kubeconfig", RELEASE, SYSTEM_NS), workdir


def operator_flags(priority: int = 2000000) -> tuple[str, ...]:
    # A later --peering-priority wins: a restarted operator outranks the peer record its killed self left behind
    # (kopf pauses on an equal priority until that record expires, 60 s).
    return ("--peering-name", RELEASE, "--blocked-retry-seconds", "2", "--peering-priority", str(priority))


def rollout_tgs(name: str, replicas: int = 3, **spec: Any) -> dict[str, Any]:
    """The CPU example on real pods with the tiny Llama, `replicas` pods."""
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = name
    # A small KV cache: the tiny model needs little, and up to 6 pods run at once on a shared machine.
    body["spec"].update({"replicas": replicas, "kvCacheMemory": "64Mi", **spec})
    return on_real_pods(body, tiny_model("llama"))


def apply_tgs(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    apply_yaml(cluster, yaml.safe_dump(body), namespace)


def revision(pod: dict[str, Any]) -> str | None:
    value = pod["metadata"].get("annotations", {}).get(TEMPLATE_HASH)
    return str(value) if value else None


def stop_order_violations(ready: ReadyPods, new_revision: str) -> list[str]:
    """Old pods that began terminating before one more new pod had become Ready than old pods stopped before
    (pods that were never Ready, e.g. a failed revision's, serve nothing: stopping them costs no capacity)."""
    stops = sorted((t, uid) for uid, t in ready.terminating_at.items()
                   if revision(ready.all_pods_seen[uid]) != new_revision and uid in ready.ready_at)
    new_ready = sorted(t for uid, t in ready.ready_at.items()
                       if revision(ready.all_pods_seen[uid]) == new_revision)
    return [ready.all_pods_seen[uid]["metadata"]["name"] for k, (t, uid) in enumerate(stops, start=1)
            if sum(1 for r in new_ready if r < t) < k]


def tgs_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          "involvedObject.kind=TextGenerationService", "-o", "json").stdout
    return sorted(json.loads(out)["items"], key=lambda e: e["metadata"]["creationTimestamp"])


def wait_rolled(cluster: Cluster, namespace: str, name: str, replicas: int, revision_before: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        tgs = get_tgs(cluster, namespace, name)
        status = tgs.get("status", {})
        moved = status.get("updateRevision") not in (None, revision_before)
        return tgs if moved and status.get("currentRevision") == status.get("updateRevision") else None

    wait_for(done, ROLLOUT_TIMEOUT, f"TGS {namespace}/{name} rolled to a new revision")
    return wait_ready(cluster, namespace, name, replicas, timeout=READY_TIMEOUT)


def test_a_spec_change_rolls_every_pod_with_no_failed_request(
        cluster: Cluster, operator_setup: tuple[Path, Path], namespace: str) -> None:
    kubeconfig, workdir = operator_setup
    with run_operator(kubeconfig, workdir, *operator_flags()) as operator:
        apply_tgs(cluster, namespace, rollout_tgs("roll"))
        before = wait_ready(cluster, namespace, "roll", 3, timeout=READY_TIMEOUT)["status"]
        assert before["lastWarmupSeconds"] >= 1, before      # a warmup worth waiting for
        api = cluster.api_client()
        with ReadyPods(api, namespace, service_selector(api, namespace, "roll")) as ready:
            # Short streams keep every pod busy; two long ones (seconds each) are likely in flight on a pod when
            # it begins terminating, so that its drain is seen from the client's side.
            with Load(ready, max_new_tokens=24) as load, Load(ready, max_new_tokens=300) as long_load:
                load.set_concurrency(3)
                long_load.set_concurrency(2)
                time.sleep(3)
                started = time.monotonic()
                apply_tgs(cluster, namespace, rollout_tgs("roll", podAnnotations={"e2e.textgen.dev/try": "2"}))
                after = wait_rolled(cluster, namespace, "roll", 3, before["currentRevision"])
                time.sleep(2)
            summary, long_summary = load.summary(), long_load.summary()
            elapsed = time.monotonic() - started
        new = after["status"]["currentRevision"]
        print(f"\nrollout of 3 pods: {elapsed:.0f} s (warmup {before['lastWarmupSeconds']} s); {summary}")
        print(f"long streams: {long_summary}")
        assert summary.failed == 0 and summary.ok > 20, summary
        assert long_summary.failed == 0 and long_summary.ok > 2, long_summary
        assert ready.min_ready(started) >= 3, ready.history
        assert ready.peak_pods <= 4, ready.peak_pods
        assert stop_order_violations(ready, new) == [], ready.history
        drained = summary.drained + long_summary.drained
        assert drained >= 1, "no stream was in flight when its pod began terminating: no drain observed"
        stopped = [p for uid, p in ready.all_pods_seen.items() if uid in ready.terminating_at and revision(p) != new]
        assert len(stopped) == 3, [p["metadata"]["name"] for p in stopped]
        for pod in stopped:      # each stopped through the launcher's drain (SIGTERM after the preStop sleep)
            assert "signal received: draining" in pod_log(cluster, pod), pod["metadata"]["name"]
        reasons = [e["reason"] for e in tgs_events(cluster, namespace)]
        assert "RolloutStarted" in reasons and reasons.count("ReplacingPod") == 3, reasons
        assert "RolloutComplete" in reasons, reasons
        assert operator.metric("textgen_operator_rollout_duration_seconds_count", result="complete") >= 1
        printed = cluster.kubectl("get", "tgs", "roll", "-n", namespace).stdout
        assert "Stable" in printed, printed


def wait_degraded(cluster: Cluster, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        degraded = condition(get_tgs(cluster, namespace, name), "Degraded")
        return degraded if degraded.get("reason") == reason else None

    return wait_for(found, READY_TIMEOUT, f"TGS {namespace}/{name} Degraded/{reason}")


def wait_revision(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The TGS status once it names its current revision: the operator may record it a moment after the pods
    are Ready (a CI run read the status in between, without currentRevision)."""
    def found() -> dict[str, Any] | None:
        status = get_tgs(cluster, namespace, name).get("status", {})
        return status if status.get("currentRevision") else None

    return wait_for(found, 60, f"TGS {namespace}/{name} status.currentRevision")


def test_a_refused_revision_rolls_back_and_a_fixed_spec_rolls_forward_through_a_restart_and_a_rescale(
        cluster: Cluster, operator_setup: tuple[Path, Path], namespace: str) -> None:
    kubeconfig, workdir = operator_setup
    api = cluster.api_client()
    good = rollout_tgs("back", rollout={"maxSurge": 2})
    with run_operator(kubeconfig, workdir, *operator_flags()) as first:
        apply_tgs(cluster, namespace, good)
        wait_ready(cluster, namespace, "back", 3, timeout=READY_TIMEOUT)
        before = wait_revision(cluster, namespace, "back")
        ready = ReadyPods(api, namespace, service_selector(api, namespace, "back")).__enter__()
        load = Load(ready, max_new_tokens=24)
        load.set_concurrency(3)
        started = time.monotonic()
        apply_tgs(cluster, namespace, rollout_tgs("back", rollout={"maxSurge": 2}, args=["--no-such-flag"]))
        degraded = wait_degraded(cluster, namespace, "back", "RolledBack")
        assert "unrecognized arguments: --no-such-flag" in degraded["message"], degraded
        wait_ready(cluster, namespace, "back", 3, timeout=READY_TIMEOUT)
        status = get_tgs(cluster, namespace, "back")["status"]
        assert status["updateRevision"] == status["currentRevision"] == before["currentRevision"], status
        rolled_back = load.summary()
        assert rolled_back.failed == 0 and ready.min_ready(started) >= 3, (rolled_back, ready.history)

        # The fixed spec: the operator dies mid-rollout (pods warming), and the HPA's write of replicas comes.
        apply_tgs(cluster, namespace, rollout_tgs("back", rollout={"maxSurge": 2},
                                                  podAnnotations={"e2e.textgen.dev/try": "fixed"}))
        wait_for(lambda: condition(get_tgs(cluster, namespace, "back"), "Progressing").get("reason") == "WarmingUp",
                 120, "the fixed revision's surge pods warming")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    cluster.kubectl("scale", "tgs", "back", "-n", namespace, "--replicas", "4")
    with run_operator(kubeconfig, workdir, *operator_flags(priority=2000001)):
        after = wait_rolled(cluster, namespace, "back", 4, before["currentRevision"])
        time.sleep(2)
        load.stop()
        ready.stop()
    summary = load.summary()
    print(f"\nrollback, then roll forward through a restart and 3 -> 4 replicas: {summary}; "
          f"peak pods {ready.peak_pods}")
    assert summary.failed == 0 and summary.ok > 20, summary
    assert ready.min_ready(started) >= 3, ready.history
    assert ready.peak_pods <= 4 + 2, ready.peak_pods
    assert stop_order_violations(ready, after["status"]["currentRevision"]) == [], ready.history
    assert condition(after, "Degraded").get("status") == "False", after["status"]
    reasons = [e["reason"] for e in tgs_events(cluster, namespace)]
    assert "RollingBack" in reasons and "RolloutComplete" in reasons, reasons
