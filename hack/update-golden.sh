#!/usr/bin/env bash
# Regenerates the golden manifests pinned by operator/tests/builders/test_golden.py: one file per example in
# crds/examples/, rendered by the operator's pure builders with the CRD's defaults applied. Review the diff!
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
out="$root/operator/tests/builders/golden"
mkdir -p "$out"
for example in "$root"/crds/examples/*.yaml; do
  name=$(basename "$example")
  "$python" -m textgen_operator.render --crd "$root/crds/textgen.dev_textgenerationservices.yaml" "$example" \
    > "$out/$name"
  echo "update-golden: wrote operator/tests/builders/golden/$name"
done
