"""A TGS's life on real pods (hack/node-agent's nodes, real `textgen-launcher` processes): a deleted pod drains
its stream and comes back, a killed shard restarts the container and the TGS shows it, a spec the server
refuses shows Degraded with the launcher's own words, and `kubectl scale` starts and stops real processes.

Every pod here is reached at its own pod IP (a loopback address); nothing is mocked but the devices (the
agent's TEXTGEN_DEVICE_OVERRIDE=cpu on its GPU-like node).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
import yaml

from e2e.harness import REPO_ROOT, Cluster, apply_yaml, wait_for
from e2e.operator_run import Operator, condition, get_tgs, wait_ready
from e2e.real_pods import (ProcessPeak, generate, launcher_pids, namespace_process_count, on_real_pods, operator,
                           pod_log, pod_processes, pods, process_peak, shard_pids, stream_tokens, tiny_model)

__all__ = ["operator", "process_peak"]   # fixtures
READY_TIMEOUT = 300
pytestmark = pytest.mark.timeout(1200)      # several waits for pods to start, on 2 shared cores


def small_tgs(name: str, accelerator: str = "cpu", count: int = 1, **spec: Any) -> str:
    """The CPU example's shape (crds/examples/smollm2-cpu.yaml) on real pods, with another name, accelerator or
    fields."""
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"].update({"accelerator": {"type": accelerator, "count": count}, **spec})
    return str(yaml.safe_dump(on_real_pods(body, tiny_model("llama"))))


def test_deleting_a_pod_mid_stream_drains_the_stream_and_the_pod_comes_back(
        cluster: Cluster, operator: Operator, namespace: str, process_peak: ProcessPeak) -> None:
    # A larger tiny model, so that a long stream outlasts the 5 s preStop sleep and reaches the SIGTERM.
    model = tiny_model("llama", hidden_size=512, intermediate_size=1024, num_hidden_layers=8)
    body = yaml.safe_load(small_tgs("drain"))
    body["spec"]["model"]["id"] = str(model)
    apply_yaml(cluster, yaml.safe_dump(body), namespace)
    wait_ready(cluster, namespace, "drain", 1, timeout=READY_TIMEOUT)
    [pod] = pods(cluster, namespace, "drain")
    # A stream of about 20 s at this machine's speed now: it must outlast the preStop sleep (5 s) and end within
    # the drain period (spec.drain.gracePeriodSeconds, 60 s by default), on a quiet machine or a loaded one.
    started = time.monotonic()
    generate(pod["status"]["podIP"], max_new_tokens=64)
    rate = 64 / (time.monotonic() - started)
    tokens = int(min(1900, max(100, rate * 20)))
    events: list[tuple[float, dict[str, Any]]] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for event in stream_tokens(pod["status"]["podIP"], max_new_tokens=tokens):
                events.append((time.monotonic(), event))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    wait_for(lambda: len(events) >= 5, 60, "the first streamed tokens")
    deleted_at = time.monotonic()
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false")
    reader.join(timeout=240)
    assert not reader.is_alive() and not errors, errors
    final = events[-1][1]
    assert final.get("details", {}).get("generated_tokens") == tokens, final
    assert final["details"]["finish_reason"] == "length", final
    assert events[-1][0] - deleted_at > 5, "the stream ended before the preStop sleep: it tested no drain"
    log = pod_log(cluster, pod)
    assert "signal received: draining 1 in-flight request(s)" in log, log[-3000:]

    def replaced() -> dict[str, Any] | None:
        current = pods(cluster, namespace, "drain")
        return current[0] if current and current[0]["metadata"]["uid"] != pod["metadata"]["uid"] else None

    wait_for(replaced, 120, "the StatefulSet to recreate the pod")
    wait_ready(cluster, namespace, "drain", 1, timeout=READY_TIMEOUT)
    [back] = pods(cluster, namespace, "drain")
    assert back["metadata"]["uid"] != pod["metadata"]["uid"]
    assert generate(back["status"]["podIP"])["details"]["generated_tokens"] == 16


def test_a_killed_shard_restarts_the_container_and_the_tgs_shows_it(
        cluster: Cluster, operator: Operator, namespace: str, process_peak: ProcessPeak) -> None:
    apply_yaml(cluster, small_tgs("sharded", accelerator="nvidia", count=2), namespace)
    wait_ready(cluster, namespace, "sharded", 1, timeout=READY_TIMEOUT)
    [pod] = pods(cluster, namespace, "sharded")
    before = pod_processes(cluster, pod)
    shards = shard_pids(before)
    assert len(shards) == 2 and len(launcher_pids(before)) == 1, before
    [rank_1] = [pid for pid, cmd in before if "--rank 1 " in cmd + " "]
    os.kill(rank_1, signal.SIGKILL)

    def degraded() -> dict[str, Any] | None:
        found = condition(get_tgs(cluster, namespace, "sharded"), "Degraded")
        restarted = found.get("status") == "True" and "restarted 1 time" in found.get("message", "")
        return found if restarted else None

    # While the restarted container starts again, the TGS says which pod restarted and why (the launcher's log
    # tail: it exits when a shard dies, so that the pod restarts).
    shown = wait_for(degraded, 120, "the TGS Degraded naming the restart")
    assert "pod sharded-0: container server" in shown["message"], shown
    assert f"shard 1 exited unexpectedly with code {-signal.SIGKILL}" in shown["message"], shown
    wait_ready(cluster, namespace, "sharded", 1, timeout=READY_TIMEOUT)
    [after] = pods(cluster, namespace, "sharded")
    assert after["metadata"]["uid"] == pod["metadata"]["uid"], "the container restarted, not the pod"
    status = after["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1, status
    assert status["lastState"]["terminated"]["exitCode"] != 0, status
    now = pod_processes(cluster, after)
    assert len(shard_pids(now)) == 2 and not set(shard_pids(now)) & set(shards), (before, now)
    assert condition(get_tgs(cluster, namespace, "sharded"), "Degraded").get("status") == "False"
    assert generate(after["status"]["podIP"])["details"]["generated_tokens"] == 16


def test_a_spec_the_server_refuses_shows_degraded_with_the_launchers_message(
        cluster: Cluster, operator: Operator, namespace: str, process_peak: ProcessPeak) -> None:
    # The tiny model has 16 attention heads: 3 shards cannot split them, and only the launcher knows the model.
    apply_yaml(cluster, small_tgs("indivisible", accelerator="nvidia", count=3), namespace)

    def degraded() -> dict[str, Any] | None:
        found = condition(get_tgs(cluster, namespace, "indivisible"), "Degraded")
        return found if found.get("status") == "True" and "divisible" in found.get("message", "") else None

    shown = wait_for(degraded, 180, "Degraded with the launcher's message")
    assert "not divisible by --num-shard 3" in shown["message"], shown
    tgs = get_tgs(cluster, namespace, "indivisible")
    assert condition(tgs, "Ready").get("status") == "False"
    assert tgs["status"].get("readyReplicas", 0) == 0


def test_scaling_the_tgs_starts_and_stops_real_processes(
        cluster: Cluster, operator: Operator, namespace: str, process_peak: ProcessPeak) -> None:
    apply_yaml(cluster, small_tgs("scaled"), namespace)
    wait_ready(cluster, namespace, "scaled", 1, timeout=READY_TIMEOUT)
    assert namespace_process_count(cluster, namespace) == 2     # a launcher and its shard
    cluster.kubectl("scale", "tgs/scaled", "-n", namespace, "--replicas=2")
    wait_ready(cluster, namespace, "scaled", 2, timeout=READY_TIMEOUT)
    placed = pods(cluster, namespace, "scaled")
    assert len(placed) == 2
    for pod in placed:
        processes = pod_processes(cluster, pod)
        assert len(launcher_pids(processes)) == 1 and len(shard_pids(processes)) == 1, processes
        assert generate(pod["status"]["podIP"])["details"]["generated_tokens"] == 16
    assert namespace_process_count(cluster, namespace) == 4
    cluster.kubectl("scale", "tgs/scaled", "-n", namespace, "--replicas=1")
    wait_for(lambda: len(pods(cluster, namespace, "scaled")) == 1, 120, "scale down to one pod")
    wait_for(lambda: namespace_process_count(cluster, namespace) == 2, 60, "the removed pod's processes to stop")
    wait_ready(cluster, namespace, "scaled", 1, timeout=READY_TIMEOUT)
