#!/usr/bin/env bash
# Prints the directory of the Prometheus Operator's own CRDs (example/prometheus-operator-crd:
# monitoring.coreos.com_prometheusrules.yaml, _servicemonitors.yaml, _podmonitors.yaml, ...) of the pinned
# release, fetched (once) from the Go module proxy as the source module
# github.com/prometheus-operator/prometheus-operator into the Go module cache. The CRDs only: nothing is built,
# and no file of that project is copied into this repository. e2e/test_chart_monitoring_crds.py installs the
# PrometheusRule, ServiceMonitor and PodMonitor CRDs from here into the local cluster's API server, so the
# chart's monitoring objects are checked by the Prometheus Operator's real schemas.
# (example/prometheus-operator-crd is what the project's bundle.yaml is made of; -crd-full differs only in
# lacking the operator.prometheus.io/version annotation.)
#
# Usage: hack/prometheus-operator-crds.sh        download when missing, then print the directory
#        PROMETHEUS_OPERATOR_VERSION=v0.x.y hack/prometheus-operator-crds.sh   another release
set -euo pipefail
module=github.com/prometheus-operator/prometheus-operator
version=${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}

die() { echo "prometheus-operator-crds: ERROR: $*" >&2; exit 1; }
. "$(dirname "${BASH_SOURCE[0]}")/go-module-dir.sh"
dir=$(go_module_dir prometheus-operator-crds "$module" "$version")
crds="$dir/example/prometheus-operator-crd"
for kind in prometheusrules servicemonitors podmonitors; do
  [ -f "$crds/monitoring.coreos.com_$kind.yaml" ] \
    || die "$module@$version has no example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml (in '$dir')."
done
echo "$crds"
