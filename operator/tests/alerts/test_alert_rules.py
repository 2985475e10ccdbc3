"""The alert rules: the plain rules file is what the chart renders, the real promtool accepts it and its unit tests
(textgen-alerts.test.yaml: each alert firing and not firing) pass, every alert has a runbook section, and the
chart renders the PrometheusRule only when enabled, with its values applied. Skipped when helm / promtool are not
built (hack/build-tools.sh)."""
from __future__ import annotations

import pathlib
import re
import subprocess
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "textgen-operator"
RULES = CHART / "files" / "alerts" / "textgen-alerts.rules.yaml"
UNIT_TESTS = pathlib.Path(__file__).with_name("textgen-alerts.test.yaml")
RUNBOOKS = ROOT / "operator" / "docs" / "alerts.md"


def tool(flag: str, name: str) -> pathlib.Path:
    proc = subprocess.run([str(ROOT / "hack" / "build-tools.sh"), flag], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"{name} is not built yet: run hack/build-tools.sh")
    return pathlib.Path(proc.stdout.strip()) / name


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"]]


def render(*sets: str) -> list[dict[str, Any]]:
    args = [str(tool("--print-bin-dir", "helm")), "template", "t", str(CHART), "-n", "textgen-system",
            "--kube-version", "1.36.3"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "PrometheusRule"]


def test_the_plain_rules_file_is_what_the_chart_renders() -> None:
    tool("--print-bin-dir", "helm")
    proc = subprocess.run([str(ROOT / "hack" / "sync-alerts.sh"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    promtool = tool("--print-metrics-bin-dir", "promtool")
    check = subprocess.run([str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0 and f"{len(alert_names())} rules found" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run([str(promtool), "test", "rules", str(UNIT_TESTS)], capture_output=True, text=True,
                          cwd=UNIT_TESTS.parent)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_every_alert_is_tested_firing_and_not_firing_and_has_a_runbook() -> None:
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    headings = set(re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.M))
    for name in alert_names():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no unit test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no unit test where it does not fire"
        assert name in headings, f"{name}: no '## {name}' runbook section in operator/docs/alerts.md"


def test_the_prometheus_rule_is_rendered_only_when_enabled_with_its_values() -> None:
    assert render() == []
    [rule] = render("prometheusRule.enabled=true", "prometheusRule.alertLabels.team=ml",
                    "prometheusRule.labels.release=kps", "prometheusRule.rules.degraded.enabled=false",
                    "prometheusRule.rules.queueSaturated.threshold=3", "prometheusRule.rules.queueSaturated.for=1m")
    assert rule["metadata"]["labels"]["release"] == "kps"
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(rules) == set(alert_names()) - {"TextgenDegraded"}
    assert rules["TextgenQueueSaturated"]["expr"].endswith("> 3") and rules["TextgenQueueSaturated"]["for"] == "1m"
    assert all(r["labels"]["team"] == "ml" and r["labels"]["severity"] for r in rules.values())
    # The operator's job defaults to the ServiceMonitor's: the metrics Service's name.
    assert 'job="t-textgen-operator-metrics"' in rules["TextgenOperatorDown"]["expr"]


def test_values_the_schema_refuses() -> None:
    helm = tool("--print-bin-dir", "helm")
    for bad in ("prometheusRule.rules.queueSaturated.for=soon", "prometheusRule.rules.serverErrors.ratio=2",
                "prometheusRule.rules.nosuch.enabled=true"):
        proc = subprocess.run([str(helm), "template", "t", str(CHART), "--kube-version", "1.36.3",
                               "--set", "prometheusRule.enabled=true", "--set", bad], capture_output=True, text=True)
        assert proc.returncode != 0 and "prometheusRule" in proc.stderr, (bad, proc.stderr)
