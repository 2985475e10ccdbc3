"""The Triton paged attention kernel (models/triton_paged.py): its pure parts here, its kernel cases
(triton_cases.py: against the gather + SDPA path, and through the ModelRunner) in a child pytest under Triton's
CPU interpreter, since Triton picks compiled or interpreted once per process, when it is imported.
`hack/gpu-check.sh` runs triton_cases.py compiled on a GPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton comes with the CUDA build of torch on Linux")

from textgen_server.models.attention import load_paged_decode, load_paged_prefill  # noqa: E402
from textgen_server.models.triton_paged import (  # noqa: E402
    merge_splits, num_splits_for, paged_decode_attention, paged_prefill_attention)

CASES = Path(__file__).with_name("triton_cases.py")


def test_unknown_candidate_is_refused() -> None:
    for load in (load_paged_decode, load_paged_prefill):
        with pytest.raises(ValueError, match="no paged attention kernel 'flash'; candidates: \\['triton'\\]"):
            load("flash")


def test_merge_ignores_empty_splits() -> None:
    """A split past a sequence's end has log-sum-exp -inf and contributes nothing (no NaN)."""
    partial = torch.tensor([[[[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]]])  # [B=1, H=1, S=3, D=2]
    lse = torch.tensor([[[0.0, float("-inf"), 0.0]]])
    torch.testing.assert_close(merge_splits(partial, lse), torch.tensor([[[2.0, 3.0]]]))


def test_num_splits_is_a_function_of_shapes() -> None:
    """Batch 1 over a long context splits to fill the GPU; a large batch or a short table does not split."""
    assert num_splits_for(batch=1, kv_heads=8, max_keys=4096) == 16
    assert num_splits_for(batch=1, kv_heads=8, max_keys=300) == 1
    assert num_splits_for(batch=128, kv_heads=8, max_keys=4096) == 1


def test_grouping_must_divide() -> None:
    query = torch.zeros(1, 6, 64)
    cache = torch.zeros(2, 16, 4, 64)
    with pytest.raises(ValueError, match="6 query heads do not group evenly over 4"):
        paged_decode_attention(query, cache, cache, torch.zeros(1, 1, dtype=torch.int32), torch.ones(1), 1.0)


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="CUDA or the interpreter is here: the kernel runs")
def test_cpu_without_interpreter_is_refused() -> None:
    query = torch.zeros(1, 4, 64)
    cache = torch.zeros(2, 16, 4, 64)
    table, one = torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, dtype=torch.long)
    with pytest.raises(RuntimeError, match="runs on CUDA devices, not 'cpu'.*TRITON_INTERPRET=1"):
        paged_decode_attention(query, cache, cache, table, one, 1.0)
    with pytest.raises(RuntimeError, match="runs on CUDA devices, not 'cpu'.*TRITON_INTERPRET=1"):
        paged_prefill_attention(query, cache, cache, table, one - 1, one, one, 1, 1.0)


def test_kernel_under_the_interpreter() -> None:
    """Run triton_cases.py in a child pytest with Triton's CPU interpreter on; all must pass."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 33, summary  # every case ran (only bfloat16 may skip, with its reason)
