"""The autoscaling signal evaluated by Prometheus's own engine (promtool test rules, from hack/build-tools.sh's
metrics tools; skipped when they are not built): only the TGS's Ready pods count, a draining or warming pod and
other TGSs' pods never do. Both providers' queries: the adapter rule (its <<.LabelMatchers>> filled as the adapter
fills them) and KEDA's."""
from __future__ import annotations

import pathlib
import subprocess

import pytest
import yaml

from textgen_operator.builders.autoscaling_metrics import adapter_metrics_query, builtin_promql

ROOT = pathlib.Path(__file__).resolve().parents[3]

# namespace, pod, TGS, phase, queue, batch (None: the gauge is not exported, as by a server still warming)
PODS = [
    ("ns", "demo-0", "demo", "ready", 3, 8),
    ("ns", "demo-1", "demo", "ready", 1, 7),
    ("ns", "demo-2", "demo", "draining", 5, 2),      # not Ready: its requests finish, new ones go elsewhere
    ("ns", "demo-3", "demo", "warming", None, None),  # engine gauges appear only once warm
    ("ns", "demo-4", "demo", "warming", 0, 0),        # a server that exports zeros while warming
    ("ns", "other-0", "other", "ready", 100, 8),     # another TGS
    ("ns2", "demo-0", "demo", "ready", 50, 8),       # the same name in another namespace
]
EXPECTED = {"QueueSize": 4, "QueueAndBatchSize": 19}


def promtool() -> pathlib.Path:
    proc = subprocess.run([str(ROOT / "hack" / "build-tools.sh"), "--print-metrics-bin-dir"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip("the metrics tools are not built yet: run hack/build-tools.sh (metrics)")
    return pathlib.Path(proc.stdout.strip()) / "promtool"


def input_series() -> list[dict[str, str]]:
    series = []
    for namespace, pod, tgs, phase, queue, batch in PODS:
        labels = f'namespace="{namespace}",pod="{pod}",textgen_dev_service="{tgs}"'
        for name in ("loading", "warming", "ready", "draining", "broken"):
            series.append({"series": f'tgi_server_phase{{{labels},phase="{name}"}}',
                           "values": f"{int(name == phase)}x5"})
        for metric, value in (("tgi_queue_size", queue), ("tgi_batch_current_size", batch)):
            if value is not None:
                series.append({"series": f"{metric}{{{labels}}}", "values": f"{value}x5"})
    return series


@pytest.mark.parametrize("metric_type", sorted(EXPECTED))
def test_only_the_tgs_ready_pods_count(tmp_path: pathlib.Path, metric_type: str) -> None:
    adapter = adapter_metrics_query(metric_type).replace("<<.LabelMatchers>>",
                                                         'textgen_dev_service="demo",namespace="ns"')
    tests = [{"interval": "15s", "input_series": input_series(),
              "promql_expr_test": [{"expr": expr, "eval_time": "30s", "exp_samples": [
                  {"labels": "{}", "value": EXPECTED[metric_type]}]}
                  for expr in (adapter, builtin_promql(metric_type, "ns", "demo"))]}]
    path = tmp_path / "signal_test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    proc = subprocess.run([str(promtool()), "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
