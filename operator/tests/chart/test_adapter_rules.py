"""The shipped prometheus-adapter rules serve exactly the metrics the operator's HPAs name, with the same PromQL
the KEDA ScaledObject sends (one definition of the signal for both providers)."""
from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import yaml

from textgen_operator.builders.autoscaling_metrics import (BUILTIN_METRICS, SERVICE_SERIES_LABEL,
                                                            adapter_metrics_query)

RULES = pathlib.Path(__file__).resolve().parents[3] / "charts" / "textgen-operator" / "files" / \
    "prometheus-adapter-rules.yaml"


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return rules


def external_rule(rules: dict[str, Any], metric: str) -> dict[str, Any]:
    [rule] = [r for r in rules["externalRules"] if r["name"]["as"] == metric]
    return dict(rule)


@pytest.mark.parametrize("metric_type", sorted(BUILTIN_METRICS))
def test_each_builtin_metric_has_one_external_rule_with_the_operators_query(rules: dict[str, Any],
                                                                           metric_type: str) -> None:
    rule = external_rule(rules, BUILTIN_METRICS[metric_type])
    assert rule["metricsQuery"] == adapter_metrics_query(metric_type)
    # The HPA asks within its namespace with the selector textgen_dev_service=<TGS>: both must be series labels.
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}}
    assert f'{SERVICE_SERIES_LABEL}!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"])
    assert series and re.fullmatch(rule["name"]["matches"], series.group(1))
    assert 'tgi_server_phase{phase="ready"} == 1' in rule["metricsQuery"]     # warming pods never count


def test_per_pod_rules_cover_the_queue_for_type_pods(rules: dict[str, Any]) -> None:
    [rule] = rules["rules"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    pattern = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"])
    assert pattern and all(re.fullmatch(pattern.group(1), n) for n in ("tgi_queue_size", "tgi_request_in_flight"))
