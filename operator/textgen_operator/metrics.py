"""The operator's own Prometheus metrics."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("textgen_operator_reconciles_total", "Reconciles finished, by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "textgen_operator_reconcile_duration_seconds", "Wall time of one reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
RECONCILE_ERRORS = Counter("textgen_operator_reconcile_errors_total", "Reconciles that raised, by error kind.",
                           ["kind"])
API_REQUESTS = Counter("textgen_operator_api_requests_total", "Kubernetes API requests sent by the reconciler.",
                       ["verb", "resource"])
APPLIES = Counter("textgen_operator_applies_total", "Server-side applies sent, by kind.", ["kind"])
QUEUE_DEPTH = Gauge("textgen_operator_queue_depth", "TextGenerationServices waiting for a reconcile.")
API_THROTTLED = Counter("textgen_operator_api_throttled_total",
                        "API answers that asked to come back later (429, or 5xx with Retry-After), each waited out "
                        "and sent again.", ["verb", "resource"])
ROLLOUT_SECONDS = Histogram(
    "textgen_operator_rollout_duration_seconds",
    "Rollouts from their first step (surge started) to every replica Ready at the target revision, by result: "
    "complete (the spec's revision) or rolled_back (back on the last good one).", ["result"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
WATCH_RESTARTS = Counter("textgen_operator_watch_restarts_total",
                         "Restarts of the operator's own Event watch after an error, by error kind.", ["kind"])

# Per-TGS gauges (set by tgs_metrics.publish after each reconcile, removed when the TGS is gone). Labels
# namespace + textgen_dev_service (the TGS name) as on the server pods' series, for alert routing and joins.
_TGS = ["namespace", "textgen_dev_service"]
TGS_CONDITION = Gauge("textgen_operator_tgs_condition",
                      "Status of each TGS condition (Ready, Progressing, Degraded, Autoscaling): 1 True, 0 False, "
                      "-1 Unknown.", [*_TGS, "type"])
TGS_CONDITION_REASON = Gauge("textgen_operator_tgs_condition_reason",
                             "Always 1: the current reason of each TGS condition (one series per TGS and type).",
                             [*_TGS, "type", "reason"])
TGS_ROLLOUT_STATE = Gauge("textgen_operator_rollout_state",
                          "1 for the TGS's current rollout state, 0 for the others: idle, progressing, paused, "
                          "rolling_back, rolled_back (back on the last good revision), failed (stopped: "
                          "autoRollback false).", [*_TGS, "state"])
TGS_REPLICAS = Gauge("textgen_operator_tgs_replicas",
                     "Replicas of a TGS by state: desired (spec.replicas, the autoscaler's choice under "
                     "autoscaling), ready, updated (on the target revision), warming (loading or warming up).",
                     [*_TGS, "state"])
TGS_WARMING_PAST_TIMEOUT = Gauge("textgen_operator_tgs_pods_warming_past_timeout",
                                 "Pods of a TGS that are not Ready, not failing and older than "
                                 "spec.rollout.warmupTimeoutSeconds.", _TGS)
TGS_AUTOSCALING_MAX = Gauge("textgen_operator_tgs_autoscaling_max_replicas",
                            "spec.autoscaling.maxReplicas of a TGS (absent without spec.autoscaling).", _TGS)
