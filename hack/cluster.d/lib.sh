# Functions of hack/cluster (sourced; uses its variables: root conf dir bin api_port etcd_port timeout
# components service_cidr pod_cidr agent_pod_cidr agent_nodes node_grace node_lease_seconds kubelet_port
# hpa_sync_period, and its log/die). The on-demand metrics pipeline is in metrics.sh.

kctl() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

pid_of() { cat "$dir/pids/$1.pid" 2>/dev/null; }

# running NAME: its pid is alive AND that process was started for this cluster dir (a recycled pid is not ours).
running() {
  local pid; pid=$(pid_of "$1") || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$dir/"
}

all_running() { local c; for c in "${components[@]}"; do running "$c" || return 1; done; }
any_running() { local c; for c in "${components[@]}"; do running "$c" && return 0; done; return 1; }

any_alive() { local pid; for pid in "$@"; do [ -d "/proc/$pid" ] && return 0; done; return 1; }

# stop_components NAME...: SIGTERM to all at once, then SIGKILL to any still alive after 10 s.
stop_components() {
  local name pids=() pid i
  for name in "$@"; do
    running "$name" || continue
    pid=$(pid_of "$name")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for i in $(seq 1 100); do
    any_alive "${pids[@]}" || return 0
    sleep 0.1
  done
  log "still alive 10 s after SIGTERM: pids ${pids[*]}; sending SIGKILL"
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

# spawn NAME ARGS...: in its own session, so a Ctrl-C in the shell (or pytest) that ran `up` does not stop it.
# 8>&- : the daemon must not inherit hack/cluster's lock, or every later up/down would wait for it forever.
spawn() {
  local name=$1; shift
  setsid "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null 8>&- &
  echo $! > "$dir/pids/$name.pid"
}

# warn_if_ephemeral PORT: a listener inside the kernel's ephemeral range can find its port taken by any outgoing
# connection's source port ("address already in use" with no server running), so say so before it bites.
warn_if_ephemeral() {
  local low high
  read -r low high < /proc/sys/net/ipv4/ip_local_port_range || return 0
  if [ "$1" -ge "$low" ] && [ "$1" -le "$high" ]; then
    log "WARNING: port $1 lies in the kernel's ephemeral port range $low-$high" \
      "(/proc/sys/net/ipv4/ip_local_port_range): a client socket may hold it; pick a port below $low."
  fi
}

check_ports() {
  local port
  for port in "$api_port" "$etcd_port" "$((etcd_port + 1))" "$kubelet_port"; do
    warn_if_ephemeral "$port"
    if ss -Hltn "sport = :$port" | grep -q .; then
      die "port 127.0.0.1:$port is already in use by another program. Pick free ports with" \
        "TEXTGEN_CLUSTER_API_PORT / TEXTGEN_CLUSTER_ETCD_PORT (etcd also takes the next port) /" \
        "TEXTGEN_CLUSTER_KUBELET_PORT."
    fi
  done
}

# wait_until MESSAGE FUNCTION: polls FUNCTION until it succeeds; on timeout shows the logs that explain why.
wait_until() {
  local msg=$1 fn=$2 deadline=$(( $(date +%s) + timeout )) c
  until "$fn" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      for c in "${components[@]}"; do
        [ -f "$dir/logs/$c.log" ] || continue
        echo "----- last lines of $dir/logs/$c.log" >&2; tail -n 15 "$dir/logs/$c.log" >&2
      done
      die "timed out after ${timeout}s waiting until $msg. Logs: $dir/logs/. Clean up with: hack/cluster down"
    fi
    sleep 0.3
  done
  log "$msg"
}

# ---- certificates: one local CA; EC P-256 keys (fast to make; Go and the Python client accept them) ----
new_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

# issue NAME SUBJECT EXTENSIONS [CA]: a certificate signed by the local CA (or by pki/CA.crt).
issue() {
  local p="$dir/pki" ca=${4:-ca}
  new_key "$p/$1.key"
  openssl req -new -key "$p/$1.key" -subj "$2" -out "$p/$1.csr" 2>/dev/null
  openssl x509 -req -in "$p/$1.csr" -CA "$p/$ca.crt" -CAkey "$p/$ca.key" -CAcreateserial -days 3650 \
    -out "$p/$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
}

# new_ca NAME CN: a self-signed CA in pki/NAME.{crt,key}.
new_ca() {
  local p="$dir/pki"
  new_key "$p/$1.key"
  openssl req -x509 -new -key "$p/$1.key" -subj "/CN=$2" -days 3650 -out "$p/$1.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>/dev/null
}

make_pki() {
  local p="$dir/pki" client='keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
  new_ca ca textgen-local-ca
  # The aggregation layer: the API server proxies to an extension API server (the metrics adapter) with this
  # client certificate and X-Remote-* headers, which the extension trusts only when signed by this separate CA.
  new_ca front-proxy-ca textgen-front-proxy-ca
  issue front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
  issue apiserver "/CN=kube-apiserver" "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,\
DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue admin "/O=system:masters/CN=textgen-admin" "$client"
  issue kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  issue kube-scheduler "/CN=system:kube-scheduler" "$client"
  # kwok writes status of nodes and pods and renews node leases on behalf of many nodes: admin rights keep it simple.
  issue kwok "/O=system:masters/CN=kwok-controller" "$client"
  # The node agent plays three kubelets and a provisioner: admin rights too (hack/node-agent/README.md).
  issue node-agent "/O=system:masters/CN=textgen-node-agent" "$client"
  # Its log endpoint (what the API server dials for `kubectl logs`), on 127.0.0.1 only.
  issue node-agent-serving "/CN=textgen-node-agent" \
    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1"
  new_key "$p/sa.key"   # signs ServiceAccount tokens (TokenRequest API)
  openssl ec -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}

# write_kubeconfig FILE CERT_NAME
write_kubeconfig() {
  local p="$dir/pki" b64="base64 -w0"
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: textgen-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $($b64 "$p/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 "$p/$2.crt")
    client-key-data: $($b64 "$p/$2.key")
contexts:
- name: textgen-local
  context: {cluster: textgen-local, user: $2, namespace: default}
current-context: textgen-local
EOF
  chmod 600 "$1"
}

write_kubeconfigs() {
  write_kubeconfig "$dir/kubeconfig" admin
  local c; for c in kube-controller-manager kube-scheduler kwok node-agent; do write_kubeconfig "$dir/$c.kubeconfig" "$c"; done
}

# ---- components ----
start_etcd() {
  local peer="http://127.0.0.1:$((etcd_port + 1))"
  # --unsafe-no-fsync: throwaway test data; fsync is most of etcd's latency on a busy disk.
  spawn etcd "$bin/etcd" --name=textgen --data-dir="$dir/etcd" --log-level=warn --unsafe-no-fsync \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" --initial-cluster="textgen=$peer" \
    --initial-cluster-state=new
}

etcd_ready() { curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; }

start_apiserver() {
  local p="$dir/pki"
  cp "$conf/audit-policy.yaml" "$dir/audit-policy.yaml"
  # Default admission plugins stay on (they are on unless disabled); NodeRestriction is added as real clusters do.
  # --endpoint-reconciler-type=none: the API server would publish its advertise address (127.0.0.1) as the
  # endpoints of Service default/kubernetes, which validation rejects (loopback) every 10 s; no pod runs to use it.
  spawn kube-apiserver "$bin/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$service_cidr" --allow-privileged=true --profiling=false \
    --audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit.log" --audit-log-maxbackup=0 \
    --endpoint-reconciler-type=none --cert-dir="$p" \
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key"
}

api_ready() {
  curl -sf --max-time 2 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$api_port/readyz" | grep -q '^ok$'
}

start_controller_manager() {
  local p="$dir/pki" kc="$dir/kube-controller-manager.kubeconfig"
  # --secure-port=0: no health endpoint to serve, one port less to clash. Every controller that ships on by
  # default runs ("*"): statefulset, garbage collector, HPA, disruption, endpoints/endpointslice, service
  # account and token, namespace, ...; each with its own ServiceAccount credentials, as kubeadm clusters do.
  spawn kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --controllers='*' \
    --use-service-account-credentials=true --service-account-private-key-file="$p/sa.key" \
    --root-ca-file="$p/ca.crt" --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --service-cluster-ip-range="$service_cidr" --cluster-cidr="$pod_cidr" --allocate-node-cidrs=false \
    --node-monitor-grace-period="$node_grace" --profiling=false \
    --horizontal-pod-autoscaler-sync-period="$hpa_sync_period"
}

start_scheduler() {
  local kc="$dir/kube-scheduler.kubeconfig"
  spawn kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --profiling=false
}

start_kwok() {
  cp "$conf/kwok-stages.yaml" "$dir/kwok-stages.yaml"
  # No --server-address: kwok serves no kubelet API (no logs/exec/port-forward), so nothing can try to reach
  # a fake node. Only nodes annotated kwok.x-k8s.io/node=fake are simulated.
  spawn kwok "$bin/kwok" --kubeconfig="$dir/kwok.kubeconfig" --config="$dir/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.1/24 --node-ip=10.200.0.254 --node-lease-duration-seconds="$node_lease_seconds"
}

# Pods run as their runAsUser (the operator's pods: uid 1000) from this checkout's venv, as from an image. Where an
# ancestor of the venv, of its base Python or of the checkout is closed to other users (root's home is 0700 on a
# fresh machine), such a process cannot even exec its command. Grant search permission (o+x: pass through, never
# list or read) on exactly those directories, and say so; nothing else on the host changes.
open_image_paths() {
  local path dir
  for path in "$(readlink -f "$root/.venv")" "$(readlink -f "$root/.venv/bin/python")" "$root"; do
    dir=$path
    [ -d "$dir" ] || dir=$(dirname "$dir")
    while :; do
      if [ "$(( 0$(stat -c %a "$dir") & 01 ))" -eq 0 ]; then
        chmod o+x "$dir" || die "cannot open $dir to the pods' users (chmod o+x); the node agent's pods need it"
        log "opened $dir to other users for search only (o+x): pods run as non-root users from $path"
      fi
      [ "$dir" = / ] && break
      dir=$(dirname "$dir")
    done
  done
}

start_node_agent() {
  local py="$root/.venv/bin/python" node args=()
  [ -x "$py" ] || die "the node agent runs from the project's venv, and $py is missing: run hack/python-env.sh"
  open_image_paths
  for node in "${agent_nodes[@]}"; do args+=(--node "$node"); done
  spawn node-agent env PYTHONPATH="$root/hack/node-agent" "$py" -m textgen_node_agent \
    --kubeconfig "$dir/node-agent.kubeconfig" --state-dir "$dir/node-agent" --pod-cidr "$agent_pod_cidr" \
    --lease-seconds "$node_lease_seconds" --kubelet-port "$kubelet_port" \
    --serving-cert "$dir/pki/node-agent-serving.crt" --serving-key "$dir/pki/node-agent-serving.key" "${args[@]}"
}

# What a node agent that did not stop in time left running: every process in a recorded pod sandbox's
# network namespace (hack/node-agent: <state>/pods/*/sandbox holds "<pid> <netns inode>").
kill_agent_leftovers() {
  local record pid inode p
  for record in "$dir"/node-agent/pods/*/sandbox; do
    [ -f "$record" ] || continue
    read -r pid inode _ < "$record"
    [ "$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)" = "$inode" ] || continue
    for p in /proc/[0-9]*; do
      [ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$inode" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
  done
  return 0
}

num_nodes_declared() { echo $(( $(grep -c '^kind: Node$' "$conf/nodes.yaml") + ${#agent_nodes[@]} )); }

nodes_ready() {
  local ready
  ready=$(kctl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
    | grep -c '^True$')
  [ "$ready" -eq "$(num_nodes_declared)" ]
}

default_sa_exists() { kctl -n default get serviceaccount default >/dev/null 2>&1; }
