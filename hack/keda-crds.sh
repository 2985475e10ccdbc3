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
. "$(dirname "${BASH_SOURCE[0]}")/go-module-dir.sh"
dir=$(go_module_dir keda-crds "$module" "$version")
crds="$dir/config/crd/bases"
[ -f "$crds/keda.sh_scaledobjects.yaml" ] \
  || die "$module@$version has no config/crd/bases/keda.sh_scaledobjects.yaml (in '$dir')."
echo "$crds"
