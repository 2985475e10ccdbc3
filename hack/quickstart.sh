#!/usr/bin/env bash
# The local quickstart: a real Kubernetes control plane, the operator installed by its Helm chart, and the
# example TextGenerationService crds/examples/mistral-7b-nvidia.yaml (2 replicas x 2 tensor-parallel shards) whose
# own pods run as real local processes on the node agent's NVIDIA-like node, answering a real generation at
# their pod address. Simulated: the GPUs (the agent's TEXTGEN_DEVICE_OVERRIDE=cpu computes on the CPU) and the
# model (a tiny random-weight Mistral built offline, so nothing is downloaded).
#
#   hack/quickstart.sh         set everything up and leave it running (idempotent: run it again at will)
#   hack/quickstart.sh down    stop what it started (the operator, the cluster with its node agent and pods)
#
# Everything it installs is pinned and cached under ~/.cache/textgen (the first run builds the control plane
# from Go modules: tens of minutes on 2 cores; later runs take about a minute).
# Settings: TEXTGEN_QUICKSTART_DIR (its logs, pids and model; default ~/.cache/textgen/quickstart), and
# hack/cluster's TEXTGEN_CLUSTER_* settings.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${TEXTGEN_CACHE:-$HOME/.cache/textgen}
state=${TEXTGEN_QUICKSTART_DIR:-$cache/quickstart}
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

say "2/6 starting the local control plane and the node agent"
kubeconfig=$(hack/cluster up)
export KUBECONFIG="$kubeconfig"
cat <<EOF
Real: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (local processes).
Nodes agent-*: the node agent (hack/node-agent) plays their kubelet and runs their pods' containers as real
  local processes, each pod in its own network namespace with a loopback pod IP. Their GPUs and Gaudi cards are
  SIMULATED: the agent sets TEXTGEN_DEVICE_OVERRIDE=cpu, so '--device cuda' computes on the CPU.
Other nodes (kwok): SIMULATED kubelets, for scheduling at scale; their pods run nothing.
EOF
kubectl get nodes -L textgen.dev/node-agent,nvidia.com/gpu.product,habana.ai/gaudi.product

say "3/6 installing the operator with its Helm chart, and running it locally with the chart's identity"
helm upgrade --install "$release" charts/textgen-operator --namespace "$system_ns" --create-namespace \
  --wait --timeout 120s >/dev/null
helm list --namespace "$system_ns"
# The operator runs here as a local process, authenticated with a token of the chart's ServiceAccount: it has
# exactly the chart's RBAC, no more. (The chart's Deployment sits on a kwok node: in a pod, the operator would
# reach the API server through the Service CIDR, which nothing routes here.)
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

say "4/6 building a tiny random-weight Mistral (offline) for the example to serve"
# The architecture of mistralai/Mistral-7B-Instruct-v0.3, scaled down: 16 attention heads on 8 KV heads (the
# example's 2 shards split them), 8192 positions (its maxTotalTokens). It lives outside /tmp (the pods mount an
# emptyDir there) and is world-readable (the pods run as uid 1000).
model="$state/models/tiny-mistral"
[ -f "$model/model.safetensors" ] || python -c "
import sys; from textgen_server.testing import build_tiny_model
build_tiny_model(sys.argv[1], arch='mistral', hidden_size=128, intermediate_size=256, num_attention_heads=16,
                 num_key_value_heads=8, max_position_embeddings=8192)" "$model" >/dev/null 2>&1
chmod -R a+rX "$state/models"
echo "model: $model"

say "5/6 applying $example (model id -> the tiny model; pods pinned to the agent's nodes) and waiting for Ready"
# Only two fields differ from the file: spec.model.id, and spec.scheduling (the agent nodes' label and taint).
python -c "
import sys, yaml
body = yaml.safe_load(open(sys.argv[1]))
body['spec']['model']['id'] = sys.argv[2]
body['spec']['scheduling'] = {'nodeSelector': {'textgen.dev/node-agent': 'true'},
    'tolerations': [{'key': 'textgen.dev/node-agent', 'operator': 'Exists', 'effect': 'NoSchedule'}]}
print(yaml.safe_dump(body))" "$example" "$model" | kubectl apply -f -
if ! kubectl wait "tgs/$tgs" --for=condition=Ready --timeout=600s; then
  kubectl describe "tgs/$tgs" >&2 || true
  tail -n 40 "$state/operator.log" >&2
  die "the TextGenerationService did not become Ready; its description and the operator's log are above"
fi
kubectl get tgs
kubectl get statefulsets,services,poddisruptionbudgets -l "app.kubernetes.io/instance=$tgs"
kubectl get pods -l "app.kubernetes.io/instance=$tgs" -o wide
agent_pods="$(dirname "$kubeconfig")/node-agent/pods"
echo
echo "The pods' server processes: per pod, a launcher and one shard per (simulated) GPU:"
pgrep -a -f "textgen-launcher --model-id $model|textgen_server[.]shard --model-path $model" | cut -c1-150 || true
echo "(logs: kubectl logs <pod>, or the files $agent_pods/<namespace>_<pod>_<uid>/server/<restart>.log)"
echo "kubectl logs $tgs-0 | grep device   # what its launcher says about the one simulated part:"
kubectl logs "$tgs-0" | grep -m1 -o "device cuda requested.*" || true

pod="$tgs-0"
say "6/6 a real generation from the pod $pod, at its pod IP (TGI API, POST /generate)"
ip=$(kubectl get pod "$pod" -o jsonpath='{.status.podIP}')
request='{"inputs": "The operator reconciles", "parameters": {"max_new_tokens": 24, "details": true}}'
echo "curl http://$ip/generate -d '$request'"
answer=$(curl -sS --noproxy '*' --fail-with-body "http://$ip/generate" -H 'Content-Type: application/json' \
  -d "$request")
echo "$answer" | python -c "
import json, sys
answer = json.load(sys.stdin)
details = answer['details']
assert details['generated_tokens'] > 0, answer
print('generated_text:', json.dumps(answer['generated_text'], ensure_ascii=False))
print(f\"{details['generated_tokens']} tokens, finish_reason {details['finish_reason']}\")"

cat <<EOF

Done. What you have now:
  - a TextGenerationService '$tgs' Ready:  KUBECONFIG=$KUBECONFIG kubectl get tgs
  - its pods, each a real textgen-launcher with 2 shard processes on the node agent's (simulated) GPU node,
    serving a tiny random-weight model at its pod IP (the text is random because the weights are; the serving
    path is the real one):  curl http://$ip/generate -d '$request'
  - logs: the operator's $state/operator.log, the pods' $agent_pods/
Stop everything with: hack/quickstart.sh down
EOF
