"""The chart's Grafana dashboards against a real Prometheus: the local pipeline (`hack/cluster metrics up`)
scraping a TGS's real `textgen-launcher` pod (tiny llama on the node agent) and the operator (a host process,
through the pipeline's file_sd job textgen-operator), after a load of streamed requests and one refused request.
Every panel query, with its variables filled in as Grafana fills them, must return a finite value: a panel that
shows nothing is a bug. Each template variable's label_values() query must offer the value used.

TEXTGEN_E2E_DASHBOARD_PLOTS=<folder> also draws both dashboards from the run's data (e2e/dashboard_plot.py) into
<folder>/dashboard-tgs.png and dashboard-operator.png (the pictures in operator/docs/dashboards.md).
"""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2e.dashboard_plot import plot_dashboard
from e2e.dashboards import (finite_values, load_dashboards, panel_queries, prometheus_range, render,
                            variable_queries)
from e2e.harness import REPO_ROOT, Cluster, apply_yaml
from e2e.metrics_pipeline import metrics_pipeline, prometheus_get, prometheus_query, scrape_target
from e2e.operator_run import Operator, wait_ready
from e2e.ready_pods_load import Load, ReadyPods
from e2e.real_pods import on_real_pods, operator, pods, tiny_model

__all__ = ["metrics_pipeline", "operator"]   # fixtures
pytestmark = [pytest.mark.timeout(480), pytest.mark.slow]
NAME = "dash"
OPERATOR_JOB = "textgen-operator"      # the pipeline's file_sd job (hack/cluster.d/prometheus.yml)
# Streams at once, seconds: batches of 2 with up to 4 streams, so the queue and the batch both move.
STEPS = [(1, 8), (4, 16), (2, 8)]


@pytest.fixture(scope="module")
def scraped_operator(metrics_pipeline: Cluster, operator: Operator) -> Iterator[Operator]:
    """The module's operator, scraped by Prometheus while the module runs."""
    address = urllib.parse.urlparse(operator.metrics_url).netloc
    with scrape_target(metrics_pipeline, "e2e-dashboards", address):
        yield operator


def tgs_yaml() -> str:
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["limits"]["maxBatchSize"] = 2
    return str(yaml.safe_dump(on_real_pods(body, tiny_model("llama"))))


def refused_request(ip: str) -> int:
    """A /generate the server refuses as invalid (TGI's `validation` error type): its HTTP status."""
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    try:
        conn.request("POST", "/generate", json.dumps({"inputs": "x", "parameters": {"max_new_tokens": 0}}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def empty_panels(variables: dict[str, str]) -> list[str]:
    """`dashboard / panel / refId: query` of every panel query with no finite value now."""
    empty = []
    for name, dashboard in load_dashboards().items():
        for query in panel_queries(name, dashboard):
            # 2 m: the window reaches back over the whole load and the TGS's last reconciles (Grafana's own
            # $__rate_interval is about 1 m for an hour's range at 15 s scrapes).
            expr = render(query.expr, variables, rate_interval="2m")
            if not finite_values(prometheus_query(expr)):
                empty.append(f"{name} / {query.panel} / {query.ref_id}: {expr}")
    return empty


def missing_variable_values(variables: dict[str, str]) -> list[str]:
    """Template variables whose label_values() query does not offer the value the test uses."""
    missing = []
    for name, dashboard in load_dashboards().items():
        for variable, (selector, label) in variable_queries(dashboard).items():
            offered = prometheus_get(f"/api/v1/label/{label}/values", **{"match[]": render(selector, variables)})
            if variables[variable] not in offered:
                missing.append(f"{name} ${variable}: {variables[variable]!r} not in {offered}")
    return missing


def test_every_dashboard_panel_shows_data(metrics_pipeline: Cluster, scraped_operator: Operator,
                                          namespace: str) -> None:
    cluster = metrics_pipeline
    start = time.time()
    apply_yaml(cluster, tgs_yaml(), namespace)
    wait_ready(cluster, namespace, NAME, 1, timeout=240)
    [pod] = pods(cluster, namespace, NAME)
    assert refused_request(pod["status"]["podIP"]) == 422
    with ReadyPods(cluster.api_client(), namespace, f"app.kubernetes.io/instance={NAME}") as ready, \
            Load(ready, max_new_tokens=32) as load:
        for num_streams, seconds in STEPS:
            load.run_steps([(num_streams, seconds)])
            # Refused requests while the load runs: the counter's series exists from the first one, so the
            # errors panel's rate shows the later ones.
            assert refused_request(pod["status"]["podIP"]) == 422
        load.set_concurrency(0)
    summary = load.summary()
    assert summary.failed == 0 and summary.ok > 0, summary
    time.sleep(5)                       # two scrapes after the last request
    variables = {"namespace": namespace, "service": NAME, "job": OPERATOR_JOB}
    assert missing_variable_values(variables) == []
    assert empty_panels(variables) == []
    assert finite_values(prometheus_query(  # the refused request shows under its TGI error type
        render('sum(tgi_request_failure{namespace="$namespace", err="validation"})', variables))) == [4.0]
    # hack/plot-dashboards.py can draw this window again while Prometheus keeps the data (2 h).
    print(f"\ndashboards: --namespace {namespace} --service {NAME} --start {start:.0f} --end {time.time():.0f}")
    plots = os.environ.get("TEXTGEN_E2E_DASHBOARD_PLOTS")
    if plots:
        for name, dashboard in load_dashboards().items():
            out = Path(plots) / f"dashboard-{name.removeprefix('textgen-')}.png"
            assert plot_dashboard(dashboard, variables, start, time.time(), 2.0, prometheus_range, out) == []
