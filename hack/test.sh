#!/usr/bin/env bash
# Runs every test tier: static checks, unit, model, server and end-to-end (real local control plane).
#
# Installs what it needs first, pinned and cached under ~/.cache/textgen (a second run reuses everything):
# the Python venv (hack/python-env.sh) and the Go-built cluster tools (hack/build-tools.sh; the first build
# takes tens of minutes on 2 cores). Both installs run at the same time: one waits on the network, the other
# on the CPU. Extra arguments go to pytest, e.g.  hack/test.sh -k exactness  or  hack/test.sh server/tests
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
logs=${TEXTGEN_LOG_DIR:-$HOME/.cache/textgen/logs}
mkdir -p "$logs"

echo "== installing: Python env and cluster tools (pinned, cached under ~/.cache/textgen)"
hack/build-tools.sh > "$logs/build-tools.log" 2>&1 &
tools_pid=$!
venv=$(hack/python-env.sh)
if ! wait "$tools_pid"; then
  tail -n 40 "$logs/build-tools.log" >&2
  echo "test: building the cluster tools failed; full log: $logs/build-tools.log" >&2
  exit 1
fi
export PATH="$venv/bin:$PATH"

echo "== static checks: import contracts, types, CRDs in the chart in step with crds/, the plain alert rules in step with the chart"
lint-imports --config pyproject.toml
mypy
hack/sync-crds.sh --check
hack/sync-alerts.sh --check

echo "== tests"
# testpaths in pyproject.toml name every tier. No "|| true" anywhere: a failure, or pytest's exit 5
# (nothing collected), fails the run.
exec python -m pytest -p no:cacheprovider "$@"
