"""Greedy generation through the running server is token-identical to transformers' float32 `generate`.

Each case sends 24 concurrent requests (prompts of 1..300 tokens, mixed max_new_tokens, half streamed) that
arrive one after another, so the running batch grows and shrinks mid-flight, and compares every request's
tokens with `model.generate(do_sample=False)` on the same checkpoint. The tiny models have logits far from
ties, so a mismatch means the engine is wrong, not that float rounding differs.
"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from server_testlib import Launch, ReferenceModels
from server_workload import Job, build_jobs, run_jobs

pytestmark = pytest.mark.slow


def assert_matches_reference(model_dir: Path, jobs: list[Job], results: list[dict], reference: ReferenceModels,
                             ) -> None:
    mismatches = []
    for job, result in zip(jobs, results):
        expected = reference.greedy(model_dir, job.prompt_ids, job.max_new_tokens)
        if result["token_ids"] != expected:
            mismatches.append(f"prompt of {len(job.prompt_ids)} tokens, max_new_tokens={job.max_new_tokens}, "
                              f"stream={job.stream}:\n  server:       {result['token_ids']}\n"
                              f"  transformers: {expected}")
    assert not mismatches, f"{len(mismatches)}/{len(jobs)} requests differ:\n" + "\n".join(mismatches)


def run_and_check(server_url: str, model_dir: Path, reference: ReferenceModels, prefix: str = "",
                  stagger_s: float = 0.06) -> list[Job]:
    jobs = build_jobs(reference.tokenizer(model_dir), prefix=prefix, stagger_s=stagger_s)
    if not prefix:  # the workload must really span 1..300 prompt tokens
        assert min(len(j.prompt_ids) for j in jobs) <= 2 and max(len(j.prompt_ids) for j in jobs) >= 290
    results = asyncio.run(run_jobs(server_url, jobs))
    assert_matches_reference(model_dir, jobs, results, reference)
    return jobs


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_greedy_matches_transformers_with_a_growing_and_shrinking_batch(
        arch: str, tiny_model_dir, launch: Launch, reference: ReferenceModels) -> None:
    model_dir = tiny_model_dir(arch)
    server = launch(model_dir)
    run_and_check(server.base_url, model_dir, reference)


def test_greedy_matches_with_prefix_cache_hits(tiny_llama_dir: Path, launch: Launch,
                                               reference: ReferenceModels) -> None:
    server = launch(tiny_llama_dir)
    shared = "You are a helpful assistant. Answer briefly and precisely. " * 4  # ~11 full KV blocks
    run_and_check(server.base_url, tiny_llama_dir, reference, prefix=shared)
    cached = [int(n) for n in re.findall(r"cached_tokens=(\d+)", server.log())]
    assert sum(1 for n in cached if n >= 64) >= 12, f"too few prefix-cache hits in the log: {cached}"


def test_greedy_matches_with_chunked_prefill(tiny_llama_dir: Path, launch: Launch,
                                             reference: ReferenceModels) -> None:
    # 48 prompt tokens per step: every prompt over 48 tokens is computed in several chunks.
    server = launch(tiny_llama_dir, "--max-batch-prefill-tokens", "48", "--max-input-tokens", "400",
                    "--max-total-tokens", "512")
    run_and_check(server.base_url, tiny_llama_dir, reference)
    chunks = [int(n) for n in re.findall(r"prefill_chunks=(\d+)", server.log())]
    assert max(chunks) >= 6, f"no request was prefilled in chunks: {chunks}"


def test_greedy_matches_under_kv_preemption(tiny_llama_dir: Path, launch: Launch,
                                            reference: ReferenceModels) -> None:
    # 512 bytes of KV per token (2 layers x 2 KV heads x 16 dims x K,V x fp32): 192 KiB = 384 tokens = 24
    # blocks, room for the longest request (300 + 40 tokens) but far less than 24 requests arriving almost at
    # once need, so running sequences run out of blocks while decoding and the newest ones are preempted.
    server = launch(tiny_llama_dir, "--kv-cache-memory", "192KiB", "--max-input-tokens", "320",
                    "--max-total-tokens", "384", "--max-batch-prefill-tokens", "352")
    run_and_check(server.base_url, tiny_llama_dir, reference, stagger_s=0.005)
    preemptions = re.findall(r"total preemptions: (\d+)", server.log())
    assert preemptions, "no preemption happened; lower --kv-cache-memory in this test"
