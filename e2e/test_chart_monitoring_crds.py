"""The chart's Prometheus Operator objects (PrometheusRule, ServiceMonitor, PodMonitor) on the real API server
with the Prometheus Operator's own CRDs (v0.85.0, from the Go module proxy: hack/prometheus-operator-crds.sh).

What is real: the CRD schemas (the objects are server-side applied, no dry run, with strict field validation;
nothing the chart set may be pruned or changed), helm's render of the chart. What is not: the Prometheus
Operator itself (not built or run), so nothing turns these objects into a Prometheus config here; the rules
themselves are checked by promtool and a real Prometheus elsewhere (operator/tests/alerts, e2e/test_alerts*)."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import REPO_ROOT, Cluster, missing, wait_for
from e2e.operator_run import CHART, helm

RELEASE, NAMESPACE = "textgen-monitoring", "textgen-monitoring-crds"
KINDS = {"PrometheusRule": "prometheusrules", "ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors"}
CRDS = [f"{plural}.monitoring.coreos.com" for plural in KINDS.values()]
TEMPLATES = ("prometheusrule.yaml", "operator-servicemonitor.yaml", "server-podmonitor.yaml")
# What hack/sync-alerts.sh renders the plain rules file with (its header says so): the chart's defaults and
# this job name.
RULES_FILE = CHART / "files" / "alerts" / "textgen-alerts.rules.yaml"
OPERATOR_JOB = "textgen-operator"


def crds_dir() -> Path:
    script = REPO_ROOT / "hack" / "prometheus-operator-crds.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"hack/prometheus-operator-crds.sh failed: {proc.stderr}"
    return Path(proc.stdout.strip())


def crd(cluster: Cluster, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "crd", name, "--ignore-not-found", "-o", "json").stdout
    return dict(json.loads(out)) if out.strip() else {}


def established(cluster: Cluster, name: str) -> bool:
    obj = crd(cluster, name)
    conditions = obj.get("status", {}).get("conditions") or []
    return "deletionTimestamp" not in obj["metadata"] and any(
        c["type"] == "Established" and c["status"] == "True" for c in conditions)


def render(cluster: Cluster) -> list[dict[str, Any]]:
    """helm template of exactly the three monitoring templates, all enabled, for the cluster's version."""
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    shows = [arg for template in TEMPLATES for arg in ("--show-only", f"templates/{template}")]
    text = helm(cluster, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", version,
                *shows, "--set", "prometheusRule.enabled=true", "--set", f"prometheusRule.operatorJob={OPERATOR_JOB}",
                "--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.podMonitor.enabled=true")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def apply(cluster: Cluster, docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Server-side apply for real (no dry run); kubectl asks for strict field validation, so an unknown field
    is refused rather than pruned."""
    return cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "--validate=strict", "-f", "-",
                           input=yaml.safe_dump_all(docs), check=False)


@pytest.fixture(scope="module")
def monitoring_crds(cluster: Cluster) -> Iterator[None]:
    """The Prometheus Operator's PrometheusRule, ServiceMonitor and PodMonitor CRDs installed (deleted after)."""
    crds = crds_dir()
    for name in CRDS:   # a rerun's apply must not land on a CRD that is still being deleted
        wait_for(lambda: "deletionTimestamp" not in crd(cluster, name).get("metadata", {}), 60,
                 f"the {name} CRD of an earlier run deleted")
    files = [str(crds / f"monitoring.coreos.com_{plural}.yaml") for plural in KINDS.values()]
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", *(arg for f in files for arg in ("-f", f)))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
    try:
        for name in CRDS:
            wait_for(lambda: established(cluster, name), 30, f"the {name} CRD Established")
        yield
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", "--ignore-not-found")
        cluster.kubectl("delete", "crd", *CRDS, "--ignore-not-found", "--timeout=60s")


def stored(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", f"{KINDS[kind]}.monitoring.coreos.com", name, "-n", NAMESPACE, "-o", "json")
    return dict(json.loads(out.stdout))


def test_chart_monitoring_objects_accepted_unpruned(cluster: Cluster, monitoring_crds: None) -> None:
    rendered = render(cluster)
    assert sorted(doc["kind"] for doc in rendered) == sorted(KINDS), "the render has one object of each kind"
    proc = apply(cluster, rendered)
    assert proc.returncode == 0, f"the real CRD schemas refused the chart's objects: {proc.stderr}"
    for doc in rendered:
        obj = stored(cluster, doc["kind"], doc["metadata"]["name"])
        assert missing(doc["spec"], obj["spec"]) == [], f"{doc['kind']}: pruned or changed by the API server"
        assert missing(doc["metadata"]["labels"], obj["metadata"]["labels"]) == []
    [rule] = [doc for doc in rendered if doc["kind"] == "PrometheusRule"]
    plain = yaml.safe_load(RULES_FILE.read_text())
    assert stored(cluster, "PrometheusRule", rule["metadata"]["name"])["spec"]["groups"] == plain["groups"], \
        f"the stored PrometheusRule's groups differ from {RULES_FILE.name}: run hack/sync-alerts.sh"


def test_schema_is_enforced(cluster: Cluster, monitoring_crds: None) -> None:
    """The schemas are not permissive (else the test above could not fail): a field the PodMonitor's schema does
    not know is refused, and a ServiceMonitor endpoint's honorLabels must be a boolean."""
    rendered = {doc["kind"]: doc for doc in render(cluster)}
    pod_monitor = rendered["PodMonitor"]
    pod_monitor["metadata"]["name"] += "-unknown-field"
    pod_monitor["spec"]["podMetricsEndpoints"][0]["scrapeEvery"] = "15s"
    proc = apply(cluster, [pod_monitor])
    assert proc.returncode != 0 and "scrapeEvery" in proc.stderr, proc.stdout + proc.stderr
    service_monitor = rendered["ServiceMonitor"]
    service_monitor["metadata"]["name"] += "-bad-type"
    service_monitor["spec"]["endpoints"][0]["honorLabels"] = "yes"
    proc = apply(cluster, [service_monitor])
    assert proc.returncode != 0 and "honorLabels" in proc.stderr, proc.stdout + proc.stderr
