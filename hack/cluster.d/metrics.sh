# The on-demand metrics pipeline of hack/cluster (sourced after lib.sh; `hack/cluster metrics up|down|status`):
# a real Prometheus that finds the node agent's pods through the API server and scrapes those that opt in, on
# their loopback pod IPs, and a real prometheus-adapter serving custom.metrics.k8s.io through the API server's
# aggregation layer, so the real HPA controller can read per-pod queue depth. Both are host processes on
# 127.0.0.1; binaries from `hack/build-tools.sh` (--print-metrics-bin-dir). Uses hack/cluster's variables.

metrics_components=(prometheus prometheus-adapter)
metrics_ns=textgen-metrics        # holds the adapter's Service (ExternalName) the APIServices point at
adapter_rules=${TEXTGEN_CLUSTER_ADAPTER_RULES:-$root/charts/textgen-operator/files/prometheus-adapter-rules.yaml}

# metrics_apis: the APIs the adapter serves with these rules, as <version>.<group>: custom.metrics.k8s.io
# v1beta1 and v1beta2 (prometheus-adapter v0.12 = custom-metrics-apiserver v1.30), and external.metrics.k8s.io
# v1beta1 only when the rules have externalRules (without them the adapter does not serve it, and an APIService
# without a backend breaks API discovery for everyone).
metrics_apis() {
  echo v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io
  if grep -qE '^externalRules:[[:space:]]*$' "$adapter_rules" 2>/dev/null; then
    echo v1beta1.external.metrics.k8s.io
  fi
}
# Every name `down` removes (the rules may have changed since `up`).
all_metrics_apis=(v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io v1beta1.external.metrics.k8s.io)

metrics_running() { local c; for c in "${metrics_components[@]}"; do running "$c" || return 1; done; }

prometheus_ready() { curl -sf --max-time 2 "http://127.0.0.1:$prometheus_port/-/ready" >/dev/null; }

# The APIServices report Available only after the API server reached the adapter (discovery through the hop).
apiservices_available() {
  local a status
  for a in $(metrics_apis); do
    status=$(kctl get apiservice "$a" \
      -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')
    [ "$status" = True ] || return 1
  done
}

metrics_pki() {
  local p="$dir/pki" client='keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
  [ -f "$p/prometheus-adapter-serving.crt" ] && return 0
  issue prometheus "/CN=textgen-prometheus" "$client"
  issue prometheus-adapter "/CN=textgen-prometheus-adapter" "$client"
  # The aggregator dials <service>.<namespace>.svc's ExternalName (127.0.0.1) and checks the certificate against
  # the APIService's caBundle (the local CA) with the server name prometheus-adapter.textgen-metrics.svc.
  issue prometheus-adapter-serving "/CN=prometheus-adapter" "keyUsage=critical,digitalSignature\n\
extendedKeyUsage=serverAuth\nsubjectAltName=DNS:prometheus-adapter.$metrics_ns.svc,IP:127.0.0.1"
  write_kubeconfig "$dir/prometheus-adapter.kubeconfig" prometheus-adapter
}

write_prometheus_config() {
  local p="$dir/pki"
  mkdir -p "$dir/prometheus-rules" "$dir/prometheus-targets"
  sed -e "s|@API@|https://127.0.0.1:$api_port|; s|@PKI@|$p|g; s|@INTERVAL@|$scrape_interval|g; s|@DIR@|$dir|g" \
    "$conf/prometheus.yml" > "$dir/prometheus.yml"
  "$metrics_bin/promtool" check config "$dir/prometheus.yml" >/dev/null \
    || die "promtool rejects $dir/prometheus.yml (from $conf/prometheus.yml)"
}

start_prometheus() {
  mkdir -p "$dir/prometheus"
  # No remote write, no alertmanager: it scrapes the targets kubernetes_sd and file_sd find, evaluates the rule
  # files of $dir/prometheus-rules and serves its query API to the adapter, on 127.0.0.1 only. Two hours of data
  # is more than any test needs. --web.enable-lifecycle: POST /-/reload after a test changed the rule files.
  spawn prometheus "$metrics_bin/prometheus" --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/prometheus" --storage.tsdb.retention.time=2h --web.enable-lifecycle \
    --web.listen-address="127.0.0.1:$prometheus_port" --log.level=info
}

start_adapter() {
  local p="$dir/pki" kc="$dir/prometheus-adapter.kubeconfig"
  [ -f "$adapter_rules" ] || die "the adapter's rules file $adapter_rules is missing"
  # --metrics-relist-interval: how often the adapter re-reads which series exist (a new pod's series is
  # invisible until then); 5 s for tests, the default is 10 m. It must be >= Prometheus' scrape interval.
  spawn prometheus-adapter "$metrics_bin/adapter" --config="$adapter_rules" \
    --prometheus-url="http://127.0.0.1:$prometheus_port/" --metrics-relist-interval="$adapter_relist" \
    --secure-port="$adapter_port" --bind-address=127.0.0.1 --cert-dir="$dir/pki/adapter-generated" \
    --tls-cert-file="$p/prometheus-adapter-serving.crt" --tls-private-key-file="$p/prometheus-adapter-serving.key" \
    --lister-kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" --v=1
}

# The adapter's identity, Prometheus' identity, and the APIServices with the adapter's Service.
apply_metrics_objects() {
  local a prio=100 ca
  ca=$(base64 -w0 "$dir/pki/ca.crt")
  {
    cat "$conf/metrics-rbac.yaml"
    cat <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: prometheus-adapter, namespace: $metrics_ns}
spec:
  # The aggregator resolves an ExternalName Service to its name and the APIService's port
  # (k8s.io/apiserver/pkg/util/proxy.ResolveCluster): 127.0.0.1:$adapter_port, never a (fake) ClusterIP.
  type: ExternalName
  externalName: 127.0.0.1
EOF
    for a in $(metrics_apis); do
      cat <<EOF
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: $a}
spec:
  group: ${a#*.}
  version: ${a%%.*}
  service: {namespace: $metrics_ns, name: prometheus-adapter, port: $adapter_port}
  caBundle: $ca
  groupPriorityMinimum: 100
  versionPriority: $prio
EOF
      prio=$((prio + 100))
    done
  } | kctl apply -f - >/dev/null
}

cmd_metrics_up() {
  if metrics_running && apiservices_available; then log "metrics pipeline already up"; return; fi
  metrics_bin=$("$root/hack/build-tools.sh" --print-metrics-bin-dir 2>/dev/null) \
    || die "the metrics tools are not built; run hack/build-tools.sh (it builds them after the cluster tools)."
  all_running && api_ready || die "the cluster is not up; run hack/cluster up first"
  cmd_metrics_down quiet
  local port start; start=$(date +%s)
  for port in "$prometheus_port" "$adapter_port"; do
    warn_if_ephemeral "$port"
    ! ss -Hltn "sport = :$port" | grep -q . || die "port 127.0.0.1:$port is already in use; set" \
      "TEXTGEN_CLUSTER_PROMETHEUS_PORT / TEXTGEN_CLUSTER_ADAPTER_PORT to free ports."
  done
  metrics_pki
  write_prometheus_config
  start_prometheus
  wait_until "Prometheus is ready on 127.0.0.1:$prometheus_port" prometheus_ready
  # The adapter's RBAC first: at start it reads kube-system/extension-apiserver-authentication and exits for good
  # when that is forbidden (on a quiet machine it got there before the RBAC existed: a fresh cluster's race).
  apply_metrics_objects
  start_adapter
  local components=("${components[@]}" "${metrics_components[@]}")    # wait_until shows their logs on timeout
  wait_until "the API server reaches the adapter (APIServices $(metrics_apis | tr '\n' ' ')Available)" \
    apiservices_available
  log "metrics pipeline up in $(( $(date +%s) - start )) s: Prometheus http://127.0.0.1:$prometheus_port," \
    "prometheus-adapter on 127.0.0.1:$adapter_port (rules $adapter_rules)"
}

# cmd_metrics_down [quiet]: the APIServices go first: one whose backend is gone makes API discovery incomplete,
# which blocks namespace deletion and the garbage collector cluster-wide.
cmd_metrics_down() {
  bin=${bin:-$(cat "$dir/bin-dir" 2>/dev/null || true)}
  if [ -n "$bin" ] && api_ready 2>/dev/null; then
    kctl delete apiservice "${all_metrics_apis[@]}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  stop_components "${metrics_components[@]}"
  rm -rf "$dir/prometheus"
  [ -n "${1:-}" ] || log "metrics pipeline down"
}

cmd_metrics_status() {
  local c ok=0
  for c in "${metrics_components[@]}"; do
    if running "$c"; then echo "$c: running (pid $(pid_of "$c"))"; else echo "$c: not running"; ok=1; fi
  done
  if apiservices_available 2>/dev/null; then echo "APIServices $(metrics_apis | tr '\n' ' '): Available"
  else echo "APIServices $(metrics_apis | tr '\n' ' '): not all Available"; ok=1; fi
  echo "prometheus: http://127.0.0.1:$prometheus_port"
  return "$ok"
}

cmd_metrics() {
  # kubectl of the binaries the cluster was started with (`down` and `status` run without build-tools.sh).
  bin=${bin:-$(cat "$dir/bin-dir" 2>/dev/null || true)}
  case "${1:-}" in
    up) cmd_metrics_up ;;
    down) cmd_metrics_down ;;
    status) cmd_metrics_status ;;
    *) die "usage: hack/cluster metrics up|down|status (got '${1:-}')" ;;
  esac
}
