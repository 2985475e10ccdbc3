{{- /*
The alert rules: the ONE source of both deliveries. templates/prometheusrule.yaml puts them into a
PrometheusRule (prometheusRule.enabled); hack/sync-alerts.sh renders them into the plain Prometheus rules file
files/alerts/textgen-alerts.rules.yaml (checked in step by `hack/sync-alerts.sh --check`, in hack/test.sh and
operator/tests/alerts). Each alert has a runbook section in operator/docs/alerts.md (anchor = lower-case name).
Labels: namespace + textgen_dev_service (the TGS name) on every per-TGS alert, severity, prometheusRule.alertLabels.
Prometheus' own template braces are written as {{`{{ ... }}`}} so that Helm leaves them alone.
*/ -}}

{{- define "textgen-operator.alertLabels" -}}
{{- $root := index . 0 }}{{- $rule := index . 1 -}}
labels:
  severity: {{ $rule.severity | quote }}
  {{- with $root.Values.prometheusRule.alertLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "textgen-operator.runbook" -}}
{{- $root := index . 0 }}{{- $name := index . 1 -}}
runbook_url: {{ printf "%s#%s" $root.Values.prometheusRule.runbookBaseUrl (lower $name) | quote }}
{{- end }}

{{- define "textgen-operator.operatorJob" -}}
{{- default (printf "%s-metrics" (include "textgen-operator.fullname" .)) .Values.prometheusRule.operatorJob -}}
{{- end }}

{{- define "textgen-operator.alertGroups" -}}
{{- $r := .Values.prometheusRule.rules -}}
{{- $w := .Values.prometheusRule.rateWindow -}}
{{- $tgs := "namespace, textgen_dev_service" -}}
{{- $job := include "textgen-operator.operatorJob" . -}}
groups:
  - name: textgen-serving
    rules:
      {{- with $r.queueSaturated }}{{ if .enabled }}
      - alert: TextgenQueueSaturated
        expr: avg by ({{ $tgs }}) (tgi_queue_size{textgen_dev_service!=""}) > {{ .threshold }}
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: {{ $value | printf "%.1f" }} requests waiting per pod'`}}
          description: {{ printf "Requests wait to be scheduled: the pods' average tgi_queue_size has stayed over %v for %s. Latency grows with the queue; add replicas (or let the autoscaler) or lower the load." (toString .threshold) .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenQueueSaturated") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.timeToFirstTokenHigh }}{{ if .enabled }}
      - alert: TextgenTimeToFirstTokenHigh
        expr: histogram_quantile(0.99, sum by ({{ $tgs }}, le) (rate(tgi_request_time_to_first_token_seconds_bucket{textgen_dev_service!=""}[{{ $w }}]))) > {{ .objectiveSeconds }}
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: TTFT p99 {{ $value | humanizeDuration }}'`}}
          description: {{ printf "The 99th percentile of the time to first token has been over the objective %vs for %s." (toString .objectiveSeconds) .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenTimeToFirstTokenHigh") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.interTokenLatencyHigh }}{{ if .enabled }}
      - alert: TextgenInterTokenLatencyHigh
        expr: histogram_quantile(0.99, sum by ({{ $tgs }}, le) (rate(tgi_request_inter_token_latency_seconds_bucket{textgen_dev_service!=""}[{{ $w }}]))) > {{ .objectiveSeconds }}
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: inter-token latency p99 {{ $value | humanizeDuration }}'`}}
          description: {{ printf "The 99th percentile of the time between two tokens of a request has been over the objective %vs for %s." (toString .objectiveSeconds) .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenInterTokenLatencyHigh") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.kvCachePressure }}{{ if .enabled }}
      - alert: TextgenKVCachePressure
        expr: max by ({{ $tgs }}) (tgi_kv_cache_usage_ratio{textgen_dev_service!=""}) > {{ .usageThreshold }} and sum by ({{ $tgs }}) (rate(tgi_request_preemptions{textgen_dev_service!=""}[{{ $w }}])) > 0
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: KV cache {{ $value | humanizePercentage }} full and requests preempted'`}}
          description: {{ printf "A pod's KV cache has been over %v used with requests being preempted (recomputed later) for %s: throughput and latency suffer." (toString .usageThreshold) .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenKVCachePressure") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.serverErrors }}{{ if .enabled }}
      - alert: TextgenServerErrors
        expr: sum by ({{ $tgs }}, err) (rate(tgi_request_failure{textgen_dev_service!="", err=~"generation|unhealthy"}[{{ $w }}])) / on ({{ $tgs }}) group_left sum by ({{ $tgs }}) (rate(tgi_request_count{textgen_dev_service!=""}[{{ $w }}])) > {{ .ratio }}
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: {{ $value | humanizePercentage }} of requests fail with {{ $labels.err }} (5xx)'`}}
          description: {{ printf "Server-side failures (TGI error type generation: 500, a shard failed mid-request; unhealthy: 503, loading or draining) over %v of requests for %s." (toString .ratio) .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenServerErrors") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.clientErrors }}{{ if .enabled }}
      - alert: TextgenClientErrors
        expr: sum by ({{ $tgs }}, err) (rate(tgi_request_failure{textgen_dev_service!="", err=~"validation|payload_too_large|overloaded"}[{{ $w }}])) / on ({{ $tgs }}) group_left sum by ({{ $tgs }}) (rate(tgi_request_count{textgen_dev_service!=""}[{{ $w }}])) > {{ .ratio }}
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: {{ $value | humanizePercentage }} of requests refused with {{ $labels.err }} (4xx)'`}}
          description: {{ printf "Requests refused (TGI error type validation: 422/400, payload_too_large: 413, overloaded: 429) over %v of requests for %s." (toString .ratio) .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenClientErrors") | nindent 10 }}
      {{- end }}{{ end }}
  - name: textgen-operator
    rules:
      {{- with $r.podsWarmingPastTimeout }}{{ if .enabled }}
      - alert: TextgenPodsWarmingPastTimeout
        expr: max by ({{ $tgs }}) (textgen_operator_tgs_pods_warming_past_timeout) > 0
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: {{ $value }} pod(s) still not Ready past spec.rollout.warmupTimeoutSeconds'`}}
          description: "Pods that are neither Ready nor failing have been starting for longer than the TGS's warmup timeout: a slow model download, a stuck load, or a timeout set too short."
          {{- include "textgen-operator.runbook" (list $ "TextgenPodsWarmingPastTimeout") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.rolloutStuck }}{{ if .enabled }}
      - alert: TextgenRolloutStuck
        expr: max by ({{ $tgs }}) (textgen_operator_rollout_state{state="progressing"}) == 1
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: rollout in progress for too long'`}}
          description: {{ printf "A rollout has been progressing (warming up or replacing pods) for %s without finishing." .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenRolloutStuck") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.rolloutFailed }}{{ if .enabled }}
      - alert: TextgenRolloutFailed
        expr: max by ({{ $tgs }}, state) (textgen_operator_rollout_state{state=~"rolling_back|rolled_back|failed"}) == 1
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: rollout {{ $labels.state }}'`}}
          description: "The spec's new revision failed (its pods crashed or did not become Ready in time): rolling_back/rolled_back = the last good revision serves again; failed = autoRollback is false and the rollout stopped where it was. The operator does not retry until the spec changes."
          {{- include "textgen-operator.runbook" (list $ "TextgenRolloutFailed") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.autoscalerAtMax }}{{ if .enabled }}
      - alert: TextgenAutoscalerAtMax
        expr: max by ({{ $tgs }}) (textgen_operator_tgs_replicas{state="desired"}) >= max by ({{ $tgs }}) (textgen_operator_tgs_autoscaling_max_replicas) and avg by ({{ $tgs }}) (tgi_queue_size{textgen_dev_service!=""}) > {{ .queueThreshold }}
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }}: autoscaler at maxReplicas ({{ $value }}) with a queue'`}}
          description: {{ printf "The TGS runs spec.autoscaling.maxReplicas and the pods' average queue has stayed over %v for %s: the autoscaler may not add pods." (toString .queueThreshold) .for | quote }}
          {{- include "textgen-operator.runbook" (list $ "TextgenAutoscalerAtMax") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.degraded }}{{ if .enabled }}
      - alert: TextgenDegraded
        expr: max by ({{ $tgs }}) (textgen_operator_tgs_condition{type="Degraded"}) == 1
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'TGS {{ $labels.namespace }}/{{ $labels.textgen_dev_service }} is Degraded{{ with printf "textgen_operator_tgs_condition_reason{type=\"Degraded\",namespace=\"%s\",textgen_dev_service=\"%s\"}" $labels.namespace $labels.textgen_dev_service | query }}: {{ . | first | label "reason" }}{{ end }}'`}}
          description: "The TGS's Degraded condition is True: see `kubectl get tgs -n NAMESPACE NAME -o jsonpath='{.status.conditions}'` for the reason and message."
          {{- include "textgen-operator.runbook" (list $ "TextgenDegraded") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.operatorDown }}{{ if .enabled }}
      - alert: TextgenOperatorDown
        expr: absent(up{job={{ $job | quote }}} == 1)
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
          job: {{ $job | quote }}    # absent() of a comparison keeps no label: name the job for routing
        annotations:
          summary: {{ printf "No textgen operator is scraped up (job %s)" $job | quote }}
          description: "No target of the operator's scrape job has answered for a while: TGSs are not reconciled (no scaling, rollouts or status updates; running pods keep serving)."
          {{- include "textgen-operator.runbook" (list $ "TextgenOperatorDown") | nindent 10 }}
      {{- end }}{{ end }}
      {{- with $r.reconcileErrors }}{{ if .enabled }}
      - alert: TextgenOperatorReconcileErrors
        expr: sum by (job, kind) (rate(textgen_operator_reconcile_errors_total{job={{ $job | quote }}}[{{ $w }}])) > {{ .ratePerSecond }}
        for: {{ .for }}
        {{- include "textgen-operator.alertLabels" (list $ .) | nindent 8 }}
        annotations:
          summary: {{`'textgen operator: reconciles failing with {{ $labels.kind }} ({{ $value | printf "%.2f" }}/s)'`}}
          description: "Reconciles keep raising (retried with backoff): see the operator's log for the error kind."
          {{- include "textgen-operator.runbook" (list $ "TextgenOperatorReconcileErrors") | nindent 10 }}
      {{- end }}{{ end }}
{{- end }}
