#!/usr/bin/env bash
# The local quickstart: a real Kubernetes control plane with simulated accelerator nodes, the operator
# installed by its Helm chart, a TextGenerationService that becomes Ready, and a real generation answered by
# textgen-launcher running on this machine.
#
#   hack/quickstart.sh         set everything up and leave it running (idempotent: run it again at will)
#   hack/quickstart.sh down    stop what it started (the launcher, the operator, the cluster)
#
# Everything it installs is pinned and cached under ~/.cache/textgen (the first run builds the control plane
# from Go modules: tens of minutes on 2 cores; later runs take well under a minute).
# Settings: TEXTGEN_QUICKSTART_PORT (the launcher's port on 127.0.0.1, default 3000), TEXTGEN_QUICKSTART_DIR
# (its logs, pids and model; default ~/.cache/textgen/quickstart), and hack/cluster's TEXTGEN_CLUSTER_* settings.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${TEXTGEN_CACHE:-$HOME/.cache/textgen}
state=${TEXTGEN_QUICKSTART_DIR:-$cache/quickstart}
port=${TEXTGEN_QUICKSTART_PORT:-3000}
release=textgen-operator
system_ns=textgen-system
example=crds/examples/mistral-7b-nvidia.yaml
tgs=mistral-7b-nvidia

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "quickstart: ERROR: $*" >&2; exit 1; }

stop_pid() {  # stop_pid NAME: SIGTERM the process recorded in $state/NAME.pid, wait for it, then forget it
  local file="$state/$1.pid" pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

if [ "${1:-up}" = "down" ]; then
  stop_pid launcher
  stop_pid operator
  hack/cluster down
  rm -rf "$state"
  echo "quickstart: stopped"
  exit 0
fi
[ "${1:-up}" = "up" ] || die "unknown command '$1'; use: hack/quickstart.sh [up|down]"
mkdir -p "$state"

say "1/6 installing: Python env and cluster tools (pinned, cached under $cache)"
hack/build-tools.sh > "$state/build-tools.log" 2>&1 &
tools_pid=$!
venv=$(hack/python-env.sh)
wait "$tools_pid" || { tail -n 30 "$state/build-tools.log" >&2; die "building the cluster tools failed; log: $state/build-tools.log"; }
bin=$(hack/build-tools.sh --print-bin-dir)
export PATH="$bin:$venv/bin:$PATH"

say "2/6 starting the local control plane (real etcd, kube-apiserver, controller-manager, scheduler)"
kubeconfig=$(hack/cluster up)
export KUBECONFIG="$kubeconfig"
echo "The accelerator nodes are SIMULATED (kwok): their pods are scheduled for real but run nothing."
kubectl get nodes -L nvidia.com/gpu.product,habana.ai/gaudi.product

say "3/6 installing the operator with its Helm chart, and running it locally with the chart's identity"
helm upgrade --install "$release" charts/textgen-operator --namespace "$system_ns" --create-namespace \
  --wait --timeout 120s >/dev/null
helm list --namespace "$system_ns"
# The chart's Deployment is a simulated pod too, so the operator process runs here, authenticated with a token
# of the chart's ServiceAccount: it has exactly the chart's RBAC, no more.
if ! running operator; then
  token=$(kubectl create token "$release" --namespace "$system_ns" --duration 24h)
  server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  cat > "$state/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: operator, user: {token: "$token"}}]
contexts: [{name: operator, context: {cluster: local, user: operator}}]
current-context: operator
EOF
  KUBECONFIG="$state/operator.kubeconfig" nohup textgen-operator --peering-name "$release" \
    --liveness-port 0 --metrics-port 0 --log-format text > "$state/operator.log" 2>&1 &
  echo $! > "$state/operator.pid"
fi
echo "operator running (pid $(cat "$state/operator.pid"), log $state/operator.log)"

say "4/6 applying a TextGenerationService ($example) and waiting for Ready"
kubectl apply -f "$example"
if ! kubectl wait "tgs/$tgs" --for=condition=Ready --timeout=180s; then
  kubectl describe "tgs/$tgs" >&2 || true
  tail -n 40 "$state/operator.log" >&2
  die "the TextGenerationService did not become Ready; the operator's log is above"
fi
kubectl get tgs
kubectl get statefulsets,services,poddisruptionbudgets -l "app.kubernetes.io/instance=$tgs"
kubectl get pods -l "app.kubernetes.io/instance=$tgs" -o wide

say "5/6 starting textgen-launcher on 127.0.0.1:$port with a small random-weight model built offline"
model="$state/tiny-llama"
[ -f "$model/config.json" ] || python -c "
import sys; from textgen_server.testing import build_tiny_model
build_tiny_model(sys.argv[1], arch='llama')" "$model"
if ! running launcher; then
  nohup textgen-launcher --model-id "$model" --hostname 127.0.0.1 --port "$port" \
    --shard-uds-path "$state/shard" > "$state/launcher.log" 2>&1 &
  echo $! > "$state/launcher.pid"
fi
for _ in $(seq 1 180); do
  running launcher || { tail -n 40 "$state/launcher.log" >&2; die "textgen-launcher exited; its log is above"; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && break
  sleep 1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] \
  || die "textgen-launcher did not become healthy in 180 s; log: $state/launcher.log"

say "6/6 a real generation (TGI API, POST /generate)"
request='{"inputs": "The operator reconciles", "parameters": {"max_new_tokens": 24, "details": true}}'
echo "curl http://127.0.0.1:$port/generate -d '$request'"
answer=$(curl -sS --fail-with-body "http://127.0.0.1:$port/generate" -H 'Content-Type: application/json' -d "$request")
echo "$answer" | python -c "
import json, sys
answer = json.load(sys.stdin)
details = answer['details']
assert details['generated_tokens'] > 0, answer
print('generated_text:', json.dumps(answer['generated_text'], ensure_ascii=False))
print(f\"{details['generated_tokens']} tokens, finish_reason {details['finish_reason']}\")"

cat <<EOF

Done. What you have now:
  - a TextGenerationService '$tgs' Ready on simulated NVIDIA nodes:  KUBECONFIG=$KUBECONFIG kubectl get tgs
  - textgen-launcher serving a tiny random-weight model (it generates nonsense, quickly):  http://127.0.0.1:$port
    (its text is random because the weights are; the serving path is the real one)
  - logs: $state/operator.log, $state/launcher.log
Stop everything with: hack/quickstart.sh down
EOF
