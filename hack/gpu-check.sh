#!/usr/bin/env bash
# Issue 15's GPU checks, for a lent NVIDIA machine (the `device` tool: one H200, python3 with torch, transformers,
# grpcio, pytest; no network). Two steps:
#   here:   hack/gpu-check.sh --fetch-wheels   downloads, for Python 3.12, the wheels the GPU machine's image lacks
#                                            (pinned by hack/constraints.txt) into .whl/ (git-ignored)
#   there:  bash hack/gpu-check.sh [--bench]   with .whl carried: installs them under /tmp/site, then runs the
#                                            gpu-marked tests (server/tests/gpu: exactness against transformers
#                                            on the same GPU in bfloat16, concurrency, preemption, the KV cache
#                                            sized from free device memory) and the Triton paged attention kernel's
#                                            tests, compiled; JUnit XML and the log go to $OUT.
#                                            --bench then runs hack/bench-gpu.py (Llama-3-8B shape): $OUT/bench-gpu.json
#                                            (written after every figure); --bench-only runs just the benchmark
# Without a CUDA device the tests skip with the reason; TEXTGEN_GPU_TESTS_ON_CPU=1 runs them on the CPU to check
# the tests' own logic.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# What the GPU image lacks of what the runner-level tests import (KINDS.md lists the image's packages), and
# transformers at our pinned version (the image has 5.17): the exactness references and our model classes must be
# the release the CPU suite tests against. About 16 MB together, well within what a device call carries.
wheels=(llguidance transformers)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p .whl
  for name in "${wheels[@]}"; do
    pin=$(grep -i "^${name}==" hack/constraints.txt) ||
      { echo "gpu-check: $name is not pinned in hack/constraints.txt" >&2; exit 1; }
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$pin"
  done
  ls -l .whl
  exit 0
fi
bench=0 tests=1
case "${1:-}" in
  "") ;;
  --bench) bench=1 ;;
  --bench-only) bench=1 tests=0 ;;  # a second device call, when the tests and the benchmark do not fit one
  *) echo "usage: hack/gpu-check.sh [--fetch-wheels | --bench | --bench-only]" >&2; exit 2 ;;
esac

out=${OUT:-$root/_output/gpu-check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$root/server${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: none"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} | tee "$out/gpu-env.txt"
status=0   # the benchmark runs even when a test failed (one device call gets both); the exit status keeps it
# The Triton paged attention kernel's tests run compiled there (here they run under Triton's CPU interpreter).
if [[ $tests == 1 ]]; then
  python3 -m pytest -p no:cacheprovider -rs server/tests/gpu server/tests/models/triton_cases.py \
    --junitxml "$out/gpu-tests.xml" 2>&1 \
    | tee "$out/gpu-tests.log" || status=$?
fi
if [[ $bench == 1 ]]; then
  python3 hack/bench-gpu.py --json "$out/bench-gpu.json" 2>&1 | tee "$out/bench-gpu.log" || status=$?
fi
exit "$status"
