"""spec.autoscaling through the real operator, chart RBAC and the real HPA controller of the local control plane
(kwok pods; no metrics adapter here, so the HPA cannot get its metric: the "adapter stopped" case). Scaling on real
load with Prometheus and prometheus-adapter is the acceptance test of the metrics pipeline (e2e README)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.harness import Cluster, apply_yaml, wait_for
from e2e.operator_run import Operator, chart_operator, condition, get_tgs, permission_errors, tiny, wait_ready

RELEASE, SYSTEM_NS = "textgen-operator", "textgen-system"
OPERATOR_USER = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with chart_operator(cluster, tmp_path_factory.mktemp("operator"), RELEASE, SYSTEM_NS) as handle:
        yield handle


def hpa_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "hpa", name, "-n", namespace, "-o", "json", "--ignore-not-found")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def pod_count(cluster: Cluster, namespace: str, name: str) -> int:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}", "-o", "name")
    return len(out.stdout.split())


def test_autoscaling_on_off(cluster: Cluster, operator: Operator, namespace: str) -> None:
    apply_yaml(cluster, tiny("auto", replicas=1, autoscaling={"minReplicas": 1, "maxReplicas": 3}), namespace)
    hpa = wait_for(lambda: hpa_of(cluster, namespace, "auto"), 60, "the operator's HPA")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService",
                                             "name": "auto"}
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "auto"
    wait_ready(cluster, namespace, "auto", 1)

    # No adapter serves external.metrics.k8s.io here: the HPA says so, and the TGS repeats its reason.
    def no_metrics() -> dict[str, Any] | None:
        scaling = condition(get_tgs(cluster, namespace, "auto"), "Autoscaling")
        # Right after the chart installs the CRD the HPA controller's discovery may not know the kind yet
        # (FailedGetScale for a sync or two): the settled state without an adapter is FailedGetExternalMetric.
        settled = scaling.get("status") == "False" and scaling.get("reason") == "FailedGetExternalMetric"
        return scaling if settled else None
    scaling = wait_for(no_metrics, 120, "Autoscaling=False with the HPA's reason")
    assert "HorizontalPodAutoscaler auto" in scaling["message"]
    tgs = get_tgs(cluster, namespace, "auto")
    assert condition(tgs, "Ready")["status"] == "True"        # nothing else breaks: the pods serve on
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             f"involvedObject.name=auto,reason={scaling['reason']}", "-o", "name").stdout
    assert events.strip(), "a Warning Event with the HPA's reason"

    # The HPA controller rewrites its status every sync; the operator follows it without writing anything.
    time.sleep(5)
    start = time.time()
    time.sleep(30)
    writes = [e for e in cluster.audit_events(since=start)
              if e["user"]["username"] == OPERATOR_USER and e["verb"] in WRITE_VERBS
              and e["objectRef"].get("namespace") == namespace]
    assert writes == [], [(e["verb"], e["objectRef"]) for e in writes]

    # Removed: the HPA goes, the condition goes, and spec.replicas (kubectl scale) rules again.
    cluster.kubectl("patch", "tgs", "auto", "-n", namespace, "--type=json",
                    "-p", '[{"op": "remove", "path": "/spec/autoscaling"}]')
    wait_for(lambda: hpa_of(cluster, namespace, "auto") is None, 60, "the HPA deleted")
    wait_for(lambda: not condition(get_tgs(cluster, namespace, "auto"), "Autoscaling"), 60,
             "the Autoscaling condition gone")
    cluster.kubectl("scale", "tgs/auto", "-n", namespace, "--replicas=2")
    wait_ready(cluster, namespace, "auto", 2)
    assert pod_count(cluster, namespace, "auto") == 2
    assert permission_errors(operator.log_path) == []


WARMUP = "20s"       # kwok's ready-delay: each pod is Running and warming this long before it is Ready


def sts_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    return int(cluster.kubectl("get", "statefulset", name, "-n", namespace, "-o",
                               "jsonpath={.spec.replicas}").stdout or 0)


def pod_ready(cluster: Cluster, namespace: str, pod: str) -> bool:
    out = cluster.kubectl("get", "pod", pod, "-n", namespace, "--ignore-not-found", "-o",
                          'jsonpath={.status.conditions[?(@.type=="Ready")].status}').stdout
    return out.strip() == "True"


def test_scale_down_waits_while_a_pod_warms(cluster: Cluster, operator: Operator, namespace: str) -> None:
    """Two Ready pods and one warming again (deleted, as after a crash); spec.replicas 3 -> 1 through the scale
    subresource (as the HPA writes it; this HPA has no metric, so it writes nothing itself): the StatefulSet stays
    at 3 until the warming pod is Ready, the TGS says why, then it goes to 1."""
    name = "defer"
    apply_yaml(cluster, tiny(name, replicas=3, autoscaling={"minReplicas": 1, "maxReplicas": 3},
                             podAnnotations={"kwok.textgen.dev/ready-delay": WARMUP}), namespace)
    wait_ready(cluster, namespace, name, 3)
    cluster.kubectl("delete", "pod", f"{name}-0", "-n", namespace, "--wait=false")
    wait_for(lambda: get_tgs(cluster, namespace, name)["status"].get("warmingReplicas") == 1, 60,
             f"{name}-0 back and warming")
    cluster.kubectl("scale", f"tgs/{name}", "-n", namespace, "--replicas=1")
    deferred = wait_for(lambda: (c := condition(get_tgs(cluster, namespace, name), "Progressing"))
                        .get("reason") == "ScaleDownDeferred" and c, 15, "Progressing=ScaleDownDeferred")
    assert f"pod {name}-0 is warming" in deferred["message"] and "spec.replicas=1" in deferred["message"], deferred
    samples = []       # the StatefulSet's replicas while the pod warms: read before the pod, so a count read
    while True:        # while the pod was still warming is followed by a not-Ready read
        replicas = sts_replicas(cluster, namespace, name)
        if pod_ready(cluster, namespace, f"{name}-0"):
            break
        samples.append(replicas)
    assert samples and set(samples) == {3}, samples
    wait_for(lambda: sts_replicas(cluster, namespace, name) == 1, 30, "the StatefulSet scaled to 1 once warm")
    wait_ready(cluster, namespace, name, 1)
    wait_for(lambda: pod_count(cluster, namespace, name) == 1, 30, "one pod left")
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             f"involvedObject.name={name},reason=ScaleDownDeferred", "-o", "json").stdout
    [event] = json.loads(events)["items"]
    assert event["type"] == "Normal" and f"{name}-0" in event["message"], event
