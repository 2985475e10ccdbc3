"""The chart's autoscaling and monitoring parts, rendered by the real helm: RBAC only for the provider in use,
the prometheus-adapter rules ConfigMap, PodMonitor/ServiceMonitor only when enabled, the operator's flags."""
from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from textgen_operator.config import parse_config

# Same folder: pytest puts it on sys.path (mypy does not know that).
from test_chart_renders import CHART, by_kind, helm_binary, render  # type: ignore[import-not-found]


def workload_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [role] = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-workloads")]
    return list(role["rules"])


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    return list(by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"])


def test_default_install_manages_hpas_and_not_scaledobjects() -> None:
    docs = render()
    groups = {g: r["verbs"] for r in workload_rules(docs) for g in r["apiGroups"]}
    assert groups["autoscaling"] == ["get", "list", "watch", "create", "patch", "delete"]
    assert "keda.sh" not in groups
    args = operator_args(docs)
    assert "--autoscaling-provider=hpa" in args and "--pod-scrape-annotations" in args
    assert not any(a.startswith("--keda-prometheus-address") for a in args)
    assert not {"PodMonitor", "ServiceMonitor", "ConfigMap"} & {d["kind"] for d in docs}
    parse_config([a for a in args if not a.startswith("--peering")])     # the operator accepts its flags


def test_keda_provider_grants_scaledobjects_and_passes_the_prometheus_address() -> None:
    docs = render("autoscaling.provider=keda", "autoscaling.keda.prometheusAddress=http://prom.monitoring:9090",
                  "serverPods.scrapeAnnotations=false")
    assert [r["verbs"] for r in workload_rules(docs) if r["apiGroups"] == ["keda.sh"]] == [
        ["get", "list", "watch", "create", "patch", "delete"]]
    args = operator_args(docs)
    config = parse_config([a for a in args if not a.startswith("--peering")])
    assert config.autoscaling_provider == "keda" and config.keda_prometheus_address == "http://prom.monitoring:9090"
    assert config.pod_scrape_annotations is False


def test_keda_without_a_prometheus_address_is_refused() -> None:
    proc = subprocess.run([str(helm_binary()), "template", "t", str(CHART), "--kube-version", "1.36.3",
                           "--set", "autoscaling.provider=keda"], capture_output=True, text=True)
    assert proc.returncode != 0 and "autoscaling.keda.prometheusAddress is required" in proc.stderr


@pytest.mark.parametrize("value", ["autoscaling.provider=hpa-v1", "monitoring.podMonitor.interval=often",
                                   "autoscaling.keda.prometheusAddress=prometheus:9090"])
def test_schema_refuses_bad_values(value: str) -> None:
    proc = subprocess.run([str(helm_binary()), "template", "t", str(CHART), "--kube-version", "1.36.3",
                           "--set", value], capture_output=True, text=True)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr


def test_adapter_rules_configmap_carries_the_rules_file() -> None:
    docs = render("autoscaling.prometheusAdapterRules.configMap=true",
                  "autoscaling.prometheusAdapterRules.namespace=monitoring")
    [config_map] = by_kind(docs, "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    rules = yaml.safe_load(config_map["data"]["config.yaml"])
    assert rules == yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())


def test_pod_monitor_scrapes_the_server_pods_with_the_tgs_label() -> None:
    docs = render("monitoring.podMonitor.enabled=true", "monitoring.podMonitor.labels.release=kps",
                  "monitoring.serviceMonitor.enabled=true", "watchNamespaces={team-a}")
    [monitor] = by_kind(docs, "PodMonitor")
    spec = monitor["spec"]
    # The labels the operator puts on every server pod (names.common_labels).
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "textgen-operator",
                                               "app.kubernetes.io/component": "server"}
    assert spec["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert spec["podTargetLabels"] == ["textgen.dev/service"]      # -> textgen_dev_service on every series
    assert spec["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    [service_monitor] = by_kind(docs, "ServiceMonitor")
    [service] = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
