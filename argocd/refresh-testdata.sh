#!/usr/bin/env bash
# Refreshes argocd/'s testdata from a real run: e2e/test_argocd_health.py with TEXTGEN_ARGOCD_CAPTURE saves the
# first TGS version of each stage and health (managedFields stripped); the files health_test.yaml names are
# replaced by the new captures, then the unit test shows which expected messages moved (review them by hand).
# The cluster settings (TEXTGEN_CLUSTER_DIR, ports) apply as for any e2e run (e2e/README.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/argocd/resource_customizations/textgen.dev/TextGenerationService"
capture=$(mktemp -d /tmp/argocd-capture.XXXXXX)
trap 'rm -rf "$capture"' EXIT
TEXTGEN_ARGOCD_CAPTURE="$capture" "$root/.venv/bin/pytest" -p no:cacheprovider -q "$root/e2e/test_argocd_health.py"
missing=0
for path in $(awk '$1 == "inputPath:" {print $2}' "$dir/health_test.yaml"); do
  name=$(basename "$path")
  if [ -f "$capture/$name" ]; then
    cp "$capture/$name" "$dir/$path"
  else
    echo "refresh-testdata: the run saved no $name (its stage or health changed?)" >&2
    missing=1
  fi
done
echo "refresh-testdata: captured: $(cd "$capture" && ls | tr '\n' ' ')" >&2
bin=$("$root/hack/build-tools.sh" --print-argocd-bin-dir 2>/dev/null) \
  || { "$root/hack/build-tools.sh" >/dev/null; bin=$("$root/hack/build-tools.sh" --print-argocd-bin-dir); }
"$bin/argocd-lua" test "$dir" || {
  echo "refresh-testdata: update the expectations above in health_test.yaml (statuses must stay)" >&2; exit 1; }
exit "$missing"
