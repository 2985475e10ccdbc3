"""The alert rules end to end: a real Prometheus (`hack/cluster metrics up`) loads the chart's rules (rendered by
hack/sync-alerts.sh with short `for`s and a low queue threshold, so a test sees them within seconds), scrapes the
node agent's real launcher pods (kubernetes_sd) and the operator running as a host process (file_sd: job
textgen-operator), and evaluates the rules every scrape interval (2 s). Alerts are read from /api/v1/alerts (no
Alertmanager here).

- An overload (concurrent streams on a real TGS with batches of one, through its Ready pods as kube-proxy would
  route them) fires TextgenQueueSaturated with the TGS's namespace and name; when the load stops it resolves.
  The TGS is autoscaled with maxReplicas 1 (its HPA can never add a pod), so the same load also fires
  TextgenAutoscalerAtMax, from the operator's gauges joined with the pods' queue.
- A TGS whose launcher refuses an argument crash-loops: the operator's Degraded condition gauge fires
  TextgenDegraded, its summary naming the reason (CrashLoopBackOff).
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from e2e.harness import REPO_ROOT, Cluster, apply_yaml, wait_for
from e2e.metrics_pipeline import (metrics_pipeline, prometheus_get, prometheus_query, reload_prometheus,
                                  scrape_target)
from e2e.operator_run import Operator, condition, get_tgs, wait_ready
from e2e.ready_pods_load import Load, ReadyPods
from e2e.real_pods import on_real_pods, operator, tiny_model

__all__ = ["metrics_pipeline", "operator"]   # fixtures
pytestmark = [pytest.mark.timeout(480), pytest.mark.slow]
QUEUE_THRESHOLD = 2        # requests waiting per pod; STREAMS on batches of one keep ~STREAMS - 1 waiting
STREAMS = 6
# The chart's values for this run: the same rules as the committed file, shorter waits.
TEST_VALUES = (f"prometheusRule.rules.queueSaturated.threshold={QUEUE_THRESHOLD}",
               "prometheusRule.rules.queueSaturated.for=6s", "prometheusRule.rules.degraded.for=4s",
               f"prometheusRule.rules.autoscalerAtMax.queueThreshold={QUEUE_THRESHOLD}",
               "prometheusRule.rules.autoscalerAtMax.for=6s", "prometheusRule.rateWindow=30s")


@pytest.fixture(scope="module")
def alert_rules(metrics_pipeline: Cluster) -> Iterator[list[dict[str, Any]]]:
    """The rules rendered into <cluster dir>/prometheus-rules/ and loaded (POST /-/reload); removed after."""
    path = metrics_pipeline.state_dir / "prometheus-rules" / "textgen-alerts.yaml"
    sets = [arg for value in TEST_VALUES for arg in ("--set", value)]
    proc = subprocess.run([str(REPO_ROOT / "hack" / "sync-alerts.sh"), "--out", str(path), *sets],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"hack/sync-alerts.sh failed: {proc.stderr}"
    reload_prometheus()
    try:
        groups = wait_for(lambda: [g for g in prometheus_get("/api/v1/rules")["groups"] if str(g["file"]) == str(path)]
                          or None, 30, "Prometheus lists the rule groups of the rendered file")
        yield groups
    finally:
        path.unlink(missing_ok=True)
        reload_prometheus()


@pytest.fixture(scope="module")
def scraped_operator(metrics_pipeline: Cluster, operator: Operator) -> Iterator[Operator]:
    """The host-process operator as a target of Prometheus' job textgen-operator."""
    address = urllib.parse.urlsplit(operator.metrics_url).netloc
    with scrape_target(metrics_pipeline, "operator-alerts", address):
        wait_for(lambda: prometheus_query('up{job="textgen-operator"} == 1') or None, 30,
                 f"Prometheus scraping the operator at {address} (job textgen-operator)")
        yield operator


def active_alerts(name: str, **labels: str) -> list[dict[str, Any]]:
    """Alerts `name` that are pending or firing now, whose labels include `labels`."""
    return [a for a in prometheus_get("/api/v1/alerts")["alerts"] if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def firing(name: str, **labels: str) -> dict[str, Any] | None:
    return next((a for a in active_alerts(name, **labels) if a["state"] == "firing"), None)


def loaded_tgs(name: str, **spec: Any) -> str:
    """The CPU example on real pods (tiny llama), batches of one: every further stream waits in the queue."""
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"]["limits"]["maxBatchSize"] = 1
    body["spec"].update(spec)
    return str(yaml.safe_dump(on_real_pods(body, tiny_model("llama"))))


def test_rules_load_and_every_alert_is_evaluated_healthy(alert_rules: list[dict[str, Any]],
                                                         scraped_operator: Operator) -> None:
    rules = [r for g in alert_rules for r in g["rules"]]
    committed = yaml.safe_load((REPO_ROOT / "charts/textgen-operator/files/alerts/textgen-alerts.rules.yaml")
                               .read_text())
    assert {r["name"] for r in rules} == {r["alert"] for g in committed["groups"] for r in g["rules"]}
    # Evaluated at least once, without errors (a bad expression or template shows here, not in promtool).
    wait_for(lambda: all(r.get("lastEvaluation", "").startswith("20") and r["health"] == "ok"
                         for g in prometheus_get("/api/v1/rules")["groups"] for r in g["rules"]
                         if r["name"] in {x["name"] for x in rules}) or None, 20, "every rule evaluated, health ok")
    # Pending while nothing scraped the operator yet (rules loaded first); the next evaluations clear it.
    wait_for(lambda: not active_alerts("TextgenOperatorDown"), 20,
             "TextgenOperatorDown inactive while the operator is scraped")


def test_overload_fires_queue_saturated_and_it_resolves(metrics_pipeline: Cluster, alert_rules: list[dict[str, Any]],
                                                        scraped_operator: Operator, namespace: str) -> None:
    cluster, name = metrics_pipeline, "busy"
    at_max = {"minReplicas": 1, "maxReplicas": 1, "metric": {"type": "QueueAndBatchSize", "averageValue": "1"}}
    apply_yaml(cluster, loaded_tgs(name, autoscaling=at_max), namespace)
    wait_ready(cluster, namespace, name, 1, timeout=240)
    mine = {"namespace": namespace, "textgen_dev_service": name}
    # Scraped and idle: the pod's queue is known (0), and no alert.
    wait_for(lambda: prometheus_query(f'tgi_queue_size{{namespace="{namespace}",textgen_dev_service="{name}"}}')
             or None, 30, "tgi_queue_size of the TGS's pod in Prometheus")
    assert not active_alerts("TextgenQueueSaturated", **mine)
    assert not active_alerts("TextgenAutoscalerAtMax", **mine)
    with ReadyPods(cluster.api_client(), namespace, f"app.kubernetes.io/instance={name}") as ready, \
            Load(ready, max_new_tokens=64) as load:
        start = time.monotonic()
        load.set_concurrency(STREAMS)
        alert = wait_for(lambda: firing("TextgenQueueSaturated", **mine), 90, "TextgenQueueSaturated firing")
        fired = time.monotonic() - start
        at_max_alert = wait_for(lambda: firing("TextgenAutoscalerAtMax", **mine), 60, "TextgenAutoscalerAtMax firing")
        load.set_concurrency(0)
        stop = time.monotonic()
        wait_for(lambda: not active_alerts("TextgenQueueSaturated", **mine)
                 and not active_alerts("TextgenAutoscalerAtMax", **mine), 120,
                 "TextgenQueueSaturated and TextgenAutoscalerAtMax resolved after the load stopped")
        resolved = time.monotonic() - stop
    assert load.summary().failed == 0, load.summary().reasons
    assert alert["labels"]["severity"] == "warning", alert
    assert float(alert["value"]) > QUEUE_THRESHOLD, alert
    assert alert["annotations"]["summary"].startswith(f"TGS {namespace}/{name}: "), alert
    assert alert["annotations"]["runbook_url"].endswith("alerts.md#textgenqueuesaturated"), alert
    assert at_max_alert["annotations"]["summary"] == f"TGS {namespace}/{name}: autoscaler at maxReplicas (1) with a queue"
    print(f"\nload of {STREAMS} streams -> TextgenQueueSaturated firing in {fired:.1f} s (for: 6s); load stopped ->"
          f" resolved in {resolved:.1f} s")


def test_a_crash_looping_tgs_fires_degraded(metrics_pipeline: Cluster, alert_rules: list[dict[str, Any]],
                                             scraped_operator: Operator, namespace: str) -> None:
    cluster, name = metrics_pipeline, "crashing"
    body = yaml.safe_load(loaded_tgs(name))
    body["spec"]["args"] = ["--no-such-flag"]       # the launcher refuses it and exits 2, again and again
    apply_yaml(cluster, yaml.safe_dump(body), namespace)
    start = time.monotonic()
    wait_for(lambda: condition(get_tgs(cluster, namespace, name), "Degraded").get("status") == "True", 120,
             "the TGS's Degraded condition True")
    mine = {"namespace": namespace, "textgen_dev_service": name}
    alert = wait_for(lambda: firing("TextgenDegraded", **mine), 60, "TextgenDegraded firing")
    reason = condition(get_tgs(cluster, namespace, name), "Degraded")["reason"]
    assert alert["labels"]["severity"] == "critical", alert
    assert alert["annotations"]["summary"].startswith(f"TGS {namespace}/{name} is Degraded: "), alert
    # The reason in the summary is one the operator's reason gauge had for this TGS (it may move between the
    # kubelet's words for a crash loop while the alert is evaluated).
    seen = {s["metric"]["reason"] for s in prometheus_query(
        f'max_over_time(textgen_operator_tgs_condition_reason{{namespace="{namespace}",textgen_dev_service="{name}",'
        f'type="Degraded"}}[5m])')}
    assert alert["annotations"]["summary"].rsplit(": ", 1)[1] in seen - {"AsExpected"}, (alert, seen, reason)
    # The operator's own gauges, as Prometheus has them (what the dashboards and the alert read).
    gauge = prometheus_query(f'textgen_operator_tgs_condition{{namespace="{namespace}",'
                             f'textgen_dev_service="{name}",type="Degraded"}}')
    assert [float(s["value"][1]) for s in gauge] == [1.0], gauge
    print(f"\ncrash-looping TGS -> TextgenDegraded firing {time.monotonic() - start:.1f} s after apply "
          f"({json.dumps(alert['annotations']['summary'])})")
