"""The built-in autoscaling metrics: their names in the external metrics API and their PromQL. Pure.

One definition for both providers: charts/textgen-operator/files/prometheus-adapter-rules.yaml serves the same
expressions to the HPA through prometheus-adapter (operator/tests/chart/test_adapter_rules.py checks that the
file and this module agree), and the KEDA ScaledObject sends them to Prometheus itself.

Series labels the expressions need (what the usual pod scrape configs give, and the chart's PodMonitor):
`namespace`, `pod`, and `textgen_dev_service`, the pod label textgen.dev/service (the TGS name) as Prometheus
spells it. Only Ready pods count: `tgi_server_phase{phase="ready"}` is the server's own view of what /health
answers 200 for (the readiness probe), so no kube-state-metrics is needed.
"""
from __future__ import annotations

SERVICE_SERIES_LABEL = "textgen_dev_service"
READY_FILTER = 'and on(namespace, pod) (tgi_server_phase{phase="ready"} == 1)'

# spec.autoscaling.metric.type -> external metric name
BUILTIN_METRICS = {
    "QueueSize": "textgen_ready_queue_size",
    "QueueAndBatchSize": "textgen_ready_queue_and_batch_size",
}

# spec.autoscaling.metric.type -> per-pod series, with {matchers} where the label matchers go
_SERIES = {
    "QueueSize": "tgi_queue_size{{{matchers}}}",
    # Both gauges come from the same scrape target, so `+` matches them one to one on all their labels.
    "QueueAndBatchSize": "(tgi_queue_size{{{matchers}}} + tgi_batch_current_size)",
}


def series_expression(metric_type: str, matchers: str) -> str:
    """The per-pod series of a built-in metric type, Ready pods only, before the sum."""
    return f"{_SERIES[metric_type].format(matchers=matchers)} {READY_FILTER}"


def builtin_promql(metric_type: str, namespace: str, tgs: str) -> str:
    """The query KEDA sends for one TGS: the sum over its Ready pods."""
    matchers = f'namespace="{namespace}",{SERVICE_SERIES_LABEL}="{tgs}"'
    return f"sum({series_expression(metric_type, matchers)})"


def adapter_metrics_query(metric_type: str) -> str:
    """The prometheus-adapter externalRules metricsQuery (Go template) of a built-in metric type. The adapter
    puts the HPA's namespace and metric selector (textgen_dev_service=<TGS>) into <<.LabelMatchers>>; one sum."""
    return f"sum({series_expression(metric_type, '<<.LabelMatchers>>')})"
