#!/usr/bin/env bash
# Builds (once) the pinned Go tools the local cluster and the e2e suite need, and prints where they are.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd   <- hack/tools/kube
#   kwok, kwokctl                                                          <- hack/tools/kwok
#   helm                                                                   <- hack/tools/helm
# and, in a second directory (the metrics pipeline `hack/cluster metrics up` starts; see hack/README.md):
#   prometheus-adapter                                                     <- hack/tools/prometheus-adapter
#   prometheus, promtool (kubernetes, file and http service discovery only) <- hack/tools/prometheus
# and, in a third (argocd/README.md; seconds to build, so the plain build makes it too):
#   argocd-lua (Argo CD's health-script runtime: gopher-lua, its libs and globals) <- hack/tools/argocd-lua
#
# Versions are pinned by the wrapper modules' go.mod/go.sum. Binaries land in
#   ${TEXTGEN_CACHE:-~/.cache/textgen}/tools/<key>/bin/
# where <key> names the pinned versions plus a hash of the wrapper modules, so a change of pins builds a fresh
# directory and an unchanged checkout finds its binaries without running go at all (a no-op in milliseconds).
# Each module is marked complete separately, so an interrupted build resumes where it stopped.
#
# Usage: hack/build-tools.sh                         build what is missing, then print the bin dir
#        hack/build-tools.sh --print-bin-dir         print the bin dir without building (exit 1 when incomplete)
#        hack/build-tools.sh --print-metrics-bin-dir the metrics tools' bin dir, without building (same)
#        hack/build-tools.sh --print-argocd-bin-dir  argocd-lua's bin dir, without building (same)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/hack/tools"
cache=${TEXTGEN_CACHE:-$HOME/.cache/textgen}
min_go_minor=26  # the wrapper modules say `go 1.26.0` (k8s.io/kubernetes v1.36 needs it)
# Bump when the build flags or the module layout change in a way the go.mod/go.sum hash cannot see.
build_rev=2
modules=(kube kwok helm)
# The metrics tools have their own directory and key, so pinning them never rebuilds the control plane.
metrics_rev=1
metrics_modules=(prometheus prometheus-adapter)
# Build tags per module. Prometheus: only the service discovery this cluster uses (kubernetes_sd; file and http
# are always in), not the AWS/Azure/GCE/... SDKs, which would be most of its compile time. Debian's package is
# no way round it: Debian builds Prometheus without kubernetes_sd (2.42.0+ds-5+deb12u1 has file/http/dns only).
declare -A build_tags=([prometheus]="remove_all_sd,enable_kubernetes_sd")
# argocd-lua is this repository's own source as well as pins: its key hashes its .go files too.
argocd_modules=(argocd-lua)
declare -A packages=(
  [kube]="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
          k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./cmd/etcd"
  [kwok]="sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl"
  [helm]="helm.sh/helm/v3/cmd/helm"
  [prometheus-adapter]="sigs.k8s.io/prometheus-adapter/cmd/adapter"
  [prometheus]="github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool"
  [argocd-lua]="."
)

log() { echo "build-tools: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pinned_version MODULE_DIR GO_MODULE -> the version the wrapper's go.mod requires
pinned_version() {
  # Matches both `require m v1.2.3` and a line `m v1.2.3` inside a require ( ... ) block.
  awk -v m="$2" '$1 == "require" {$1 = ""; $0 = $0} $1 == m && $2 ~ /^v/ {print $2; exit}' "$tools/$1/go.mod"
}

cache_key() {
  local names hash
  names="k8s-$(pinned_version kube k8s.io/kubernetes)_etcd-$(pinned_version kube go.etcd.io/etcd/server/v3)"
  names+="_kwok-$(pinned_version kwok sigs.k8s.io/kwok)_helm-$(pinned_version helm helm.sh/helm/v3)"
  hash=$( (echo "$build_rev"; for m in "${modules[@]}"; do cat "$tools/$m/go.mod" "$tools/$m/go.sum"; done) \
    | sha256sum | cut -c1-10)
  echo "${names}_$hash"
}

metrics_cache_key() {
  local hash
  hash=$( (echo "$metrics_rev ${build_tags[*]}"
    for m in "${metrics_modules[@]}"; do cat "$tools/$m/go.mod" "$tools/$m/go.sum"; done) | sha256sum | cut -c1-10)
  echo "metrics_prometheus-$(prometheus_release)_adapter-$(pinned_version prometheus-adapter \
    sigs.k8s.io/prometheus-adapter)_$hash"
}

# prometheus_release: the Prometheus release of the pinned Go module version (v0.316.0 -> v3.16.0).
prometheus_release() {
  pinned_version prometheus github.com/prometheus/prometheus | sed -E 's/^v0\.3([0-9]+)\.([0-9]+)$/v3.\1.\2/'
}

argocd_cache_key() {
  echo "argocd-lua_gopher-lua-$(pinned_version argocd-lua github.com/yuin/gopher-lua)_$(cat "$tools"/argocd-lua/go.* \
    "$tools"/argocd-lua/*.go | sha256sum | cut -c1-10)"
}

tool_dir="$cache/tools/$(cache_key)"
argocd_dir="$cache/tools/$(argocd_cache_key)"
bin_dir="$tool_dir/bin"
metrics_dir="$cache/tools/$(metrics_cache_key)"

all_done() {
  local m
  for m in "${modules[@]}"; do [ -f "$tool_dir/.done-$m" ] || return 1; done
}

metrics_done() {
  local m
  for m in "${metrics_modules[@]}"; do [ -f "$metrics_dir/.done-$m" ] || return 1; done
}

check_go() {
  command -v go >/dev/null || die "'go' is not on PATH. Install Go >= 1.$min_go_minor (https://go.dev/dl/) and retry."
  local v minor
  v=$(go env GOVERSION)  # e.g. go1.26.8
  minor=$(echo "$v" | sed -E 's/^go1\.([0-9]+).*/\1/')
  [[ "$minor" =~ ^[0-9]+$ ]] || die "cannot parse the Go version '$v'; Go >= 1.$min_go_minor is required."
  [ "$minor" -ge "$min_go_minor" ] \
    || die "Go $v is too old: the pinned Kubernetes needs Go >= 1.$min_go_minor. Install a newer Go and retry."
}

# download_with_retries MODULE: the module proxy is the only network step, and it fails transiently.
download_with_retries() {
  local attempt
  for attempt in 1 2 3 4; do
    if (cd "$tools/$1" && go mod download); then
      return 0
    fi
    [ "$attempt" = 4 ] \
      && die "go mod download failed 4 times in hack/tools/$1; check access to \$GOPROXY ($(go env GOPROXY)) and retry."
    log "go mod download failed in hack/tools/$1 (attempt $attempt), retrying in $((attempt * 10)) s"
    sleep $((attempt * 10))
  done
}

# version_ldflags MODULE: -X flags that stamp the release into the binaries. Without them the Kubernetes
# binaries report v0.0.0 (`kubectl version`, /version), and Helm's chart kubeVersion checks fail.
version_ldflags() {
  local k8s major minor pkg out=""
  case "$1" in
    kube)
      k8s=$(pinned_version kube k8s.io/kubernetes)  # v1.36.3
      major=$(echo "$k8s" | cut -d. -f1 | tr -d v); minor=$(echo "$k8s" | cut -d. -f2)
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        out+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
      done ;;
    helm) out=" -X helm.sh/helm/v3/internal/version.version=$(pinned_version helm helm.sh/helm/v3)" ;;
    prometheus) out=" -X github.com/prometheus/common/version.Version=$(prometheus_release | tr -d v)" ;;
  esac
  echo "$out"
}

# build_module MODULE [TOOL_DIR]: one `go build` of the module's packages into TOOL_DIR/bin (default: $tool_dir).
build_module() {
  local m=$1 tool_dir=${2:-$tool_dir} start tmp
  local bin_dir="$tool_dir/bin"
  start=$(date +%s)
  log "[$m] downloading modules (cached after the first run)"
  download_with_retries "$m"
  # shellcheck disable=SC2086,SC2116  # echo joins the list onto one line
  log "[$m] compiling: $(echo ${packages[$m]//k8s.io\/kubernetes\/cmd\//}) (the first build takes many minutes)"
  tmp=$(mktemp -d "$tool_dir/tmp-$m.XXXXXX")
  # -trimpath: binaries do not embed this checkout's path; -s -w: no symbol tables, a faster link.
  # shellcheck disable=SC2086  # the package list is meant to split
  (cd "$tools/$m" && GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -trimpath -tags="${build_tags[$m]:-}" -ldflags="-s -w$(version_ldflags "$m")" -o "$tmp/" \
      ${packages[$m]}) \
    || { rm -rf "$tmp"; die "go build failed in hack/tools/$m (see the errors above)."; }
  mv -f "$tmp"/* "$bin_dir/"
  rm -rf "$tmp"
  touch "$tool_dir/.done-$m"
  log "[$m] done in $(( $(date +%s) - start )) s"
}

build_argocd_tools() {
  [ -f "$argocd_dir/.done-argocd-lua" ] && return 0
  mkdir -p "$argocd_dir/bin"
  exec 6>"$argocd_dir/.lock"
  flock 6
  [ -f "$argocd_dir/.done-argocd-lua" ] || build_module argocd-lua "$argocd_dir"
}

build_metrics_tools() {
  metrics_done && return 0
  mkdir -p "$metrics_dir/bin"
  exec 7>"$metrics_dir/.lock"
  flock 7
  local m
  log "metrics tools into $metrics_dir"
  for m in "${metrics_modules[@]}"; do
    [ -f "$metrics_dir/.done-$m" ] || build_module "$m" "$metrics_dir"
  done
}

main() {
  case "${1:-}" in
    --print-bin-dir)
      all_done || { log "tools are not built yet; run hack/build-tools.sh"; exit 1; }
      echo "$bin_dir"; return ;;
    --print-metrics-bin-dir)
      metrics_done || { log "the metrics tools are not built yet; run hack/build-tools.sh"; exit 1; }
      echo "$metrics_dir/bin"; return ;;
    --print-argocd-bin-dir)
      [ -f "$argocd_dir/.done-argocd-lua" ] || { log "argocd-lua is not built yet; run hack/build-tools.sh"; exit 1; }
      echo "$argocd_dir/bin"; return ;;
    "") ;;
    *) die "unknown argument '$1'. Usage: hack/build-tools.sh [--print-bin-dir|--print-metrics-bin-dir|$(
      )--print-argocd-bin-dir]" ;;
  esac
  if all_done && metrics_done && [ -f "$argocd_dir/.done-argocd-lua" ]; then echo "$bin_dir"; return; fi
  check_go
  mkdir -p "$bin_dir"
  local m total_start
  total_start=$(date +%s)
  if ! all_done; then
    # Two shells building into the same directory would race; the second one waits, then finds the work done.
    exec 9>"$tool_dir/.lock"
    flock 9
    log "building into $tool_dir"
    for m in "${modules[@]}"; do
      [ -f "$tool_dir/.done-$m" ] || build_module "$m"
    done
  fi
  build_metrics_tools
  build_argocd_tools
  log "all tools ready in $(( $(date +%s) - total_start )) s"
  echo "$bin_dir"
}

main "$@"
