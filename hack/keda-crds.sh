#!/usr/bin/env bash
# Prints the directory of KEDA's own CRDs (config/crd/bases: keda.sh_scaledobjects.yaml, ...) of the pinned
# KEDA release, fetched (once) from the Go module proxy as the source module github.com/kedacore/keda/v2 into
# the Go module cache. The CRDs only: no KEDA binary is built (hack/README.md, build-tools.sh, says why), and no
# KEDA file is copied into this repository. e2e/test_autoscaling_keda.py installs the ScaledObject CRD from here
# into the local cluster's API server, so the operator's ScaledObjects are checked by KEDA's real schema.
#
# Usage: hack/keda-crds.sh            download when missing, then print the directory
#        KEDA_VERSION=v2.x.y hack/keda-crds.sh   another release (the pin below is the one the docs name)
set -euo pipefail
module=github.com/kedacore/keda/v2
version=${KEDA_VERSION:-v2.21.0}

die() { echo "keda-crds: ERROR: $*" >&2; exit 1; }
command -v go >/dev/null || die "'go' is not on PATH (the CRDs come through the Go module proxy); install Go and retry."

dir=""
for attempt in 1 2 3; do
  # Outside any module (a go.mod here would change what `go mod download` means). -modcacherw: files it
  # extracts stay writable, so removing ~/go/pkg/mod by hand works (`go clean -modcache` works either way).
  if json=$(cd / && GOFLAGS="${GOFLAGS:-} -modcacherw" go mod download -json "$module@$version"); then
    dir=$(printf '%s' "$json" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
    break
  fi
  printf '%s\n' "${json:-}" | sed -nE 's/^[[:space:]]*"Error": "(.*)",?$/keda-crds: \1/p' >&2
  [ "$attempt" = 3 ] && die "go mod download $module@$version failed 3 times; check \$GOPROXY ($(go env GOPROXY))."
  sleep $((attempt * 5))
done
crds="$dir/config/crd/bases"
[ -f "$crds/keda.sh_scaledobjects.yaml" ] \
  || die "$module@$version has no config/crd/bases/keda.sh_scaledobjects.yaml (in '$dir')."
echo "$crds"
