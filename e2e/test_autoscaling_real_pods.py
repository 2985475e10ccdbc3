"""Queue-depth autoscaling end to end, everything real but the devices: the operator's HorizontalPodAutoscaler,
the real HPA controller (kube-controller-manager, sync every 5 s here), a real Prometheus scraping the server pods
on their loopback IPs, a real prometheus-adapter behind the aggregation layer (`hack/cluster metrics up`), and
real `textgen-launcher` pods on the node agent, loaded through their Ready pods as kube-proxy would
(e2e/ready_pods_load.py).

The metric is QueueAndBatchSize (waiting + running requests of the Ready pods): under a steady load of C streams
it reads C whatever the number of pods, so the HPA's ceil(C / target) holds still. (A queue-only signal is a
backlog: it falls to 0 once there are enough pods, and the HPA then removes them again.)
"""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
import yaml

from e2e.autoscaling_watch import Sample, Timeline, replica_changes, tgs_and_hpa
from e2e.harness import REPO_ROOT, Cluster, apply_yaml, wait_for
from e2e.metrics_pipeline import component_pid, metrics_command, metrics_pipeline
from e2e.operator_run import Operator, condition, get_tgs, wait_ready
from e2e.ready_pods_load import Load, ReadyPods
from e2e.real_pods import generate, on_real_pods, operator, pods, tiny_model

__all__ = ["metrics_pipeline", "operator"]   # fixtures
pytestmark = pytest.mark.timeout(600)
METRIC = "textgen_ready_queue_and_batch_size"
STREAMS = 10           # the load step: ceil(10 / 3) = 4 > maxReplicas, so the HPA also reports the limit
TARGET = "3"
BATCH = 2              # limits.maxBatchSize: one pod runs 2 streams and queues the rest
READY_TIMEOUT = 240
# The test's own scale-down: 15 s of lower recommendations, then 2 pods per 10 s. Scale-up is the operator's,
# derived from the measured warmup.
SCALE_DOWN = {"stabilizationWindowSeconds": 15, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 10}]}


def autoscaled_tgs(name: str, **autoscaling: Any) -> str:
    """The CPU example on real pods (tiny llama), batches of BATCH, autoscaled 1..3 on queue + batch."""
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"]["limits"]["maxBatchSize"] = BATCH
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3,
                                   "metric": {"type": "QueueAndBatchSize", "averageValue": TARGET},
                                   "behavior": {"scaleDown": SCALE_DOWN}, **autoscaling}
    return str(yaml.safe_dump(on_real_pods(body, tiny_model("llama"))))


def autoscaling(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return condition(get_tgs(cluster, namespace, name), "Autoscaling")


def hpa_row(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """`kubectl get hpa` as a person reads it: MINPODS, MAXPODS, REPLICAS (TARGETS may hold spaces)."""
    header, row = cluster.kubectl("get", "hpa", name, "-n", namespace).stdout.splitlines()[:2]
    words = row.split()
    return {"name": words[0], "minpods": words[-4], "maxpods": words[-3], "replicas": words[-2], "text": row}


def assert_steady(samples: list[Sample]) -> None:
    """Under a steady step the replica count only ever rises (no scale-down, no flapping)."""
    changes = replica_changes(samples)
    assert changes == sorted(changes), f"spec.replicas went {changes} under a steady load"


def test_load_scales_up_warm_pods_take_load_and_scale_back_down(
        metrics_pipeline: Cluster, operator: Operator, namespace: str) -> None:
    cluster, name = metrics_pipeline, "auto"
    apply_yaml(cluster, autoscaled_tgs(name), namespace)
    wait_ready(cluster, namespace, name, 1, timeout=READY_TIMEOUT)
    wait_for(lambda: autoscaling(cluster, namespace, name).get("reason") == "ValidMetricFound", 60,
             "the TGS's Autoscaling condition: the HPA reads its metric")
    api = cluster.api_client()
    with Timeline(cluster, namespace, name, METRIC, interval=2.0) as timeline, \
            ReadyPods(api, namespace, f"app.kubernetes.io/instance={name}") as ready, \
            Load(ready, max_new_tokens=48) as load:
        step = time.monotonic()
        load.set_concurrency(STREAMS)
        wait_ready(cluster, namespace, name, 3, timeout=READY_TIMEOUT)
        all_ready = time.monotonic()
        at_max = wait_for(lambda: (c := autoscaling(cluster, namespace, name)).get("reason") == "TooManyReplicas"
                          and c, 30, "the Autoscaling condition: limited at maxReplicas")
        row = hpa_row(cluster, namespace, name)
        time.sleep(20)                                  # the step holds: nothing may move
        hold_end = time.monotonic()
        load.set_concurrency(0)
        wait_for(lambda: get_tgs(cluster, namespace, name)["spec"]["replicas"] == 1, 120,
                 "the HPA scaling the TGS back to minReplicas")
        wait_ready(cluster, namespace, name, 1, timeout=60)
    summary = load.summary()
    during_step = timeline.between(step, hold_end)

    assert summary.failed == 0, summary.reasons
    assert_steady(during_step)
    assert replica_changes(timeline.between(step))[-1] == 1, replica_changes(timeline.samples)
    # Warming pods add no capacity and lower no average: while a pod existed that was not Ready yet, the metric
    # was still the whole load on the Ready pods, and the HPA never wanted fewer pods than existed.
    warming = [s for s in during_step if s.pods > s.ready and s.metric is not None]
    assert warming, "no sample caught a warming pod"
    assert all((s.metric or 0) >= STREAMS - 2 for s in warming), [(s.ready, s.pods, s.metric) for s in warming]
    assert all((s.hpa_desired or 0) >= s.spec_replicas for s in warming if s.t > step + 5), warming
    # The new pods took load once Ready.
    served = {r.pod for r in load.results if r.ok and r.started > all_ready}
    assert len(served) == 3, served
    # What a person sees.
    assert (row["minpods"], row["maxpods"], row["replicas"]) == ("1", "3", "3"), row["text"]
    assert "maxReplicas" in at_max["message"] or "3" in at_max["message"], at_max
    first_new_ready = next(t for t, names in ready.history if len(names) >= 2)
    print(f"\nload step -> first new pod Ready: {first_new_ready - step:.1f} s; all 3 Ready: "
          f"{all_ready - step:.1f} s; replicas {replica_changes(timeline.samples)}")


def test_adapter_stopped_shows_no_metrics_and_nothing_else_breaks(
        metrics_pipeline: Cluster, operator: Operator, namespace: str) -> None:
    cluster, name = metrics_pipeline, "blind"
    apply_yaml(cluster, autoscaled_tgs(name), namespace)
    wait_ready(cluster, namespace, name, 1, timeout=READY_TIMEOUT)
    wait_for(lambda: autoscaling(cluster, namespace, name).get("reason") == "ValidMetricFound", 60,
             "the HPA reading its metric")
    os.kill(component_pid(cluster, "prometheus-adapter"), signal.SIGTERM)
    try:
        blind = wait_for(lambda: (c := autoscaling(cluster, namespace, name)).get("status") == "False" and c, 60,
                         "the Autoscaling condition False once the adapter is gone")
        assert blind["reason"] == "FailedGetExternalMetric", blind
        assert METRIC in blind["message"], blind
        tgs = get_tgs(cluster, namespace, name)
        assert condition(tgs, "Ready").get("status") == "True", tgs["status"]
        [pod] = pods(cluster, namespace, name)
        assert generate(pod["status"]["podIP"])["details"]["generated_tokens"] == 16
        # The operator still acts: a manual scale is carried out. An HPA that cannot compute replicas overrides
        # nothing, so the condition keeps saying why autoscaling is off (not ScaleOverridden).
        cluster.kubectl("scale", f"tgs/{name}", "-n", namespace, "--replicas=2")
        wait_ready(cluster, namespace, name, 2, timeout=READY_TIMEOUT)
        assert autoscaling(cluster, namespace, name)["reason"] == "FailedGetExternalMetric"
    finally:
        metrics_command("up")
    # Metrics back: the HPA acts again and overrides the manual scale with what the (idle) load asks for.
    wait_for(lambda: get_tgs(cluster, namespace, name)["spec"]["replicas"] == 1, 90,
             "the HPA scaling back to 1 once it reads metrics again")
    assert replicas_owners(cluster, namespace, name) == {"kube-controller-manager"}
    wait_for(lambda: autoscaling(cluster, namespace, name).get("status") == "True", 60, "Autoscaling True again")
    overridden = kubectl_scale_is_overridden(cluster, namespace, name)
    assert "spec.replicas=2 was set by kubectl" in overridden["message"], overridden
    assert "it wants 1" in overridden["message"], overridden
    wait_for(lambda: get_tgs(cluster, namespace, name)["spec"]["replicas"] == 1, 30, "the HPA winning")
    assert replicas_owners(cluster, namespace, name) == {"kube-controller-manager"}
    wait_for(lambda: autoscaling(cluster, namespace, name).get("reason") not in (None, "ScaleOverridden"), 30,
             "the Autoscaling condition back to the HPA's own reason")


def overridden_events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                          f"involvedObject.name={name},reason=ScaleOverridden").stdout
    return sorted(json.loads(out)["items"], key=lambda e: e["metadata"]["creationTimestamp"])


def kubectl_scale_is_overridden(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """`kubectl scale` while the HPA computes replicas: the TGS reports ScaleOverridden (a Warning Event) until
    the HPA's next sync (5 s here) writes its own count back. The operator reconciles within a fraction of a
    second of the write; a scale the HPA undid even sooner is tried again (at most 3 times)."""
    for _ in range(3):
        before = len(overridden_events(cluster, namespace, name))
        cluster.kubectl("scale", f"tgs/{name}", "-n", namespace, "--replicas=2")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            events = overridden_events(cluster, namespace, name)
            if len(events) > before:
                event = events[-1]
                assert event["type"] == "Warning", event
                return event
            time.sleep(0.2)
    raise AssertionError("no ScaleOverridden Event after 3 kubectl scale --replicas=2")


def replicas_owners(cluster: Cluster, namespace: str, name: str) -> set[str]:
    """Field managers owning spec.replicas (kubectl scale: kubectl; the HPA controller: kube-controller-manager)."""
    entries = get_tgs_with_fields(cluster, namespace, name)["metadata"]["managedFields"]
    return {e["manager"] for e in entries if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})}


def get_tgs_with_fields(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "tgs", name, "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    return dict(json.loads(out))


def test_removing_autoscaling_deletes_the_hpa_and_kubectl_scale_rules(
        metrics_pipeline: Cluster, operator: Operator, namespace: str) -> None:
    cluster, name = metrics_pipeline, "handoff"
    apply_yaml(cluster, autoscaled_tgs(name), namespace)
    wait_for(lambda: tgs_and_hpa(cluster, namespace, name)[1] or None, 60, "the operator's HPA")
    body = yaml.safe_load(autoscaled_tgs(name))
    del body["spec"]["autoscaling"]
    apply_yaml(cluster, yaml.safe_dump(body), namespace)
    wait_for(lambda: not tgs_and_hpa(cluster, namespace, name)[1], 60, "the HPA deleted with spec.autoscaling")
    assert "Autoscaling" not in [c["type"] for c in get_tgs(cluster, namespace, name)["status"]["conditions"]]
    cluster.kubectl("scale", f"tgs/{name}", "-n", namespace, "--replicas=2")
    wait_ready(cluster, namespace, name, 2, timeout=READY_TIMEOUT)
    time.sleep(12)      # two HPA syncs: nothing takes spec.replicas back
    assert get_tgs(cluster, namespace, name)["spec"]["replicas"] == 2
