"""Tensor parallelism through the real server: --num-shard 2 and 4 give transformers' greedy tokens exactly.

For each architecture (llama, mistral with its 32-token sliding window, qwen2 with q/k/v biases and tied
embeddings) and shard count, one launcher runs with chunked prefill (48 tokens per step) and a KV cache of 32
blocks, and serves the single-shard exactness workload twice: 24 staggered concurrent requests (prompts of 1..300
tokens, half streamed) arriving 5 ms apart, so running sequences are preempted and recomputed, then the same with
a shared 5-block prefix, so the prefix cache hits. Every request's tokens must equal transformers' float64
`generate(do_sample=False)`; the comparison is meaningful because the models run in float64 and the smallest
top-2 logit gap of the reference is checked to be far above float64 summation-order error (conftest.py).
"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from server_workload import build_jobs, run_jobs
from tp_testlib import MIN_MEANINGFUL_GAP, ReferenceCache, tp_flags

pytestmark = pytest.mark.slow

SHARED_PREFIX = "You are a helpful assistant. Answer briefly and precisely. " * 2  # ~5 full KV blocks
# 512 tokens: the longest request (5-block prefix + 300 + 40 tokens) fits, two of the longest plain ones do not.
NUM_BLOCKS = 32
# Per token and rank: 2 layers x (K, V) x (4 KV heads / N) x 8 dims x 8 bytes (float64).
KV_BYTES_PER_TOKEN_AT_ONE_SHARD = 2 * 2 * 4 * 8 * 8


def constrained_flags(num_shard: int) -> list[str]:
    kv_bytes = NUM_BLOCKS * 16 * KV_BYTES_PER_TOKEN_AT_ONE_SHARD // num_shard
    return ["--max-batch-prefill-tokens", "48", "--max-input-tokens", "400", "--max-total-tokens", "460",
            "--kv-cache-memory", str(kv_bytes)]


def check_workload(base_url: str, model_dir: Path, reference: ReferenceCache, prefix: str, stagger_s: float) -> None:
    jobs = build_jobs(reference.tokenizer(model_dir), prefix=prefix, stagger_s=stagger_s)
    results = asyncio.run(run_jobs(base_url, jobs))
    mismatches = []
    for job, result in zip(jobs, results):
        expected = reference.greedy(model_dir, job.prompt_ids, job.max_new_tokens)
        if result["token_ids"] != expected:
            mismatches.append(f"prompt of {len(job.prompt_ids)} tokens, max_new_tokens={job.max_new_tokens}:\n"
                              f"  server:       {result['token_ids']}\n  transformers: {expected}")
    assert not mismatches, f"{len(mismatches)}/{len(jobs)} requests differ:\n" + "\n".join(mismatches)


@pytest.mark.parametrize("num_shard", [2, 4])
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_sharded_greedy_equals_transformers_under_chunking_preemption_and_prefix_cache(
        arch: str, num_shard: int, tp_model_dir, module_launch, float64_reference: ReferenceCache) -> None:
    model_dir = tp_model_dir(arch)
    server = module_launch(model_dir, *tp_flags(num_shard), *constrained_flags(num_shard))
    info = httpx.get(f"{server.base_url}/info", timeout=10).json()
    assert (info["num_shard"], info["model_dtype"], info["model_device_type"]) == (num_shard, "torch.float64", "cpu")
    check_workload(server.base_url, model_dir, float64_reference, prefix="", stagger_s=0.005)
    check_workload(server.base_url, model_dir, float64_reference, prefix=SHARED_PREFIX, stagger_s=0.06)
    assert server.stop() == 0  # frees the ranks' memory before the next launcher starts
    log = server.log()
    assert f"starting {num_shard} shard(s) on cpu (gloo between ranks)" in log
    chunks = [int(n) for n in re.findall(r"prefill_chunks=(\d+)", log)]
    assert max(chunks) >= 6, f"no request was prefilled in chunks: {chunks}"
    assert re.findall(r"total preemptions: (\d+)", log), "no preemption happened; lower the KV cache"
    cached = [int(n) for n in re.findall(r"cached_tokens=(\d+)", log)]
    assert sum(1 for n in cached if n >= 64) >= 12, f"too few prefix-cache hits in the log: {cached}"
    assert float64_reference.min_gap > MIN_MEANINGFUL_GAP, f"a near-tie: top-2 gap {float64_reference.min_gap}"
