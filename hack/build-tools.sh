#!/usr/bin/env bash
# Builds (once) the pinned Go tools the local cluster and the e2e suite need, and prints where they are.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd   <- hack/tools/kube
#   kwok, kwokctl                                                          <- hack/tools/kwok
#   helm                                                                   <- hack/tools/helm
#
# Versions are pinned by the wrapper modules' go.mod/go.sum. Binaries land in
#   ${TEXTGEN_CACHE:-~/.cache/textgen}/tools/<key>/bin/
# where <key> names the pinned versions plus a hash of the wrapper modules, so a change of pins builds a fresh
# directory and an unchanged checkout finds its binaries without running go at all (a no-op in milliseconds).
# Each module is marked complete separately, so an interrupted build resumes where it stopped.
#
# Usage: hack/build-tools.sh                 build what is missing, then print the bin dir
#        hack/build-tools.sh --print-bin-dir print the bin dir without building (exit 1 when incomplete)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/hack/tools"
cache=${TEXTGEN_CACHE:-$HOME/.cache/textgen}
min_go_minor=26  # the wrapper modules say `go 1.26.0` (k8s.io/kubernetes v1.36 needs it)
# Bump when the build flags or the module layout change in a way the go.mod/go.sum hash cannot see.
build_rev=2
modules=(kube kwok helm)
declare -A packages=(
  [kube]="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
          k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./cmd/etcd"
  [kwok]="sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl"
  [helm]="helm.sh/helm/v3/cmd/helm"
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

tool_dir="$cache/tools/$(cache_key)"
bin_dir="$tool_dir/bin"

all_done() {
  local m
  for m in "${modules[@]}"; do [ -f "$tool_dir/.done-$m" ] || return 1; done
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
  esac
  echo "$out"
}

build_module() {
  local m=$1 start tmp
  start=$(date +%s)
  log "[$m] downloading modules (cached after the first run)"
  download_with_retries "$m"
  # shellcheck disable=SC2086,SC2116  # echo joins the list onto one line
  log "[$m] compiling: $(echo ${packages[$m]//k8s.io\/kubernetes\/cmd\//}) (the first build takes many minutes)"
  tmp=$(mktemp -d "$tool_dir/tmp-$m.XXXXXX")
  # -trimpath: binaries do not embed this checkout's path; -s -w: no symbol tables, a faster link.
  # shellcheck disable=SC2086  # the package list is meant to split
  (cd "$tools/$m" && GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -trimpath -ldflags="-s -w$(version_ldflags "$m")" -o "$tmp/" ${packages[$m]}) \
    || { rm -rf "$tmp"; die "go build failed in hack/tools/$m (see the errors above)."; }
  mv -f "$tmp"/* "$bin_dir/"
  rm -rf "$tmp"
  touch "$tool_dir/.done-$m"
  log "[$m] done in $(( $(date +%s) - start )) s"
}

main() {
  if [ "${1:-}" = "--print-bin-dir" ]; then
    all_done || { log "tools are not built yet; run hack/build-tools.sh"; exit 1; }
    echo "$bin_dir"; return
  fi
  [ -z "${1:-}" ] || die "unknown argument '$1'. Usage: hack/build-tools.sh [--print-bin-dir]"
  if all_done; then echo "$bin_dir"; return; fi
  check_go
  mkdir -p "$bin_dir"
  # Two shells building into the same directory would race; the second one waits, then finds the work done.
  exec 9>"$tool_dir/.lock"
  flock 9
  local m total_start
  total_start=$(date +%s)
  log "building into $tool_dir"
  for m in "${modules[@]}"; do
    [ -f "$tool_dir/.done-$m" ] || build_module "$m"
  done
  log "all tools ready in $(( $(date +%s) - total_start )) s"
  echo "$bin_dir"
}

main "$@"
