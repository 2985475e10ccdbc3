"""Tensor parallelism on two NVIDIA GPUs (issue 15): `--num-shard 2 --device cuda`, NCCL between the ranks (rank r
on cuda:r), gives transformers' float64 greedy tokens exactly, through the real server, under chunked prefill and
preemption (the CPU test's workload, test_tp_greedy_exactness.py).

Marked gpu; skipped with the reason unless torch sees two CUDA devices (the lent GPU machine has one, so this has
not run yet). `TEXTGEN_GPU_TESTS_ON_CPU=1` runs it with `--device cpu` instead, which checks this file's own logic
and proves nothing about CUDA.
"""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import torch

from test_tp_greedy_exactness import check_workload, constrained_flags
from tp_testlib import MIN_MEANINGFUL_GAP, ReferenceCache, tp_flags

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
ON_CPU = os.environ.get("TEXTGEN_GPU_TESTS_ON_CPU") == "1"
DEVICE, BACKEND = ("cpu", "gloo") if ON_CPU else ("cuda", "nccl")


@pytest.mark.skipif(torch.cuda.device_count() < 2 and not ON_CPU,
                    reason=f"needs two CUDA devices, torch sees {torch.cuda.device_count()}; "
                           "TEXTGEN_GPU_TESTS_ON_CPU=1 checks this test's own logic on the CPU")
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_two_gpu_ranks_give_transformers_greedy_tokens(arch: str, tp_model_dir, module_launch,
                                                       float64_reference: ReferenceCache) -> None:
    model_dir: Path = tp_model_dir(arch)
    flags = [flag for flag in tp_flags(2) if flag not in ("--device", "cpu")] + ["--device", DEVICE]
    server = module_launch(model_dir, *flags, *constrained_flags(2))
    info = httpx.get(f"{server.base_url}/info", timeout=10).json()
    assert (info["num_shard"], info["model_dtype"], info["model_device_type"]) == (2, "torch.float64", DEVICE)
    check_workload(server.base_url, model_dir, float64_reference, prefix="", stagger_s=0.005)
    assert server.stop() == 0
    assert f"starting 2 shard(s) on {DEVICE} ({BACKEND} between ranks)" in server.log()
    assert float64_reference.min_gap > MIN_MEANINGFUL_GAP, f"a near-tie: top-2 gap {float64_reference.min_gap}"
