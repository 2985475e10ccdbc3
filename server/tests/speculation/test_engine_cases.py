"""Speculation through the engine's harder paths, still token-identical to no speculation: prefix-cache hits,
preemption (a KV cache too small for the batch), EOS inside a run of accepted candidates, max_new_tokens that
cut a run of candidates, and chunked prefill."""
from __future__ import annotations

from pathlib import Path

import pytest

from spec_testlib import EngineRun, Job, echo_prompts, random_prompts

SPECULATE = 4


@pytest.fixture(scope="module")
def model_dir(repetitive_model_dir) -> Path:
    return repetitive_model_dir("llama")


@pytest.fixture(scope="module")
def engines(model_dir: Path) -> dict[int, EngineRun]:
    return {k: EngineRun(model_dir, speculate=k) for k in (0, SPECULATE)}


def test_prefix_cache_hits_keep_speculative_output_exact(engines: dict[int, EngineRun]) -> None:
    shared = random_prompts(1, 64, 700, seed=11)[0]  # 4 full blocks every request shares
    tails = echo_prompts(engines[0], random_prompts(6, 5, 700, seed=12))
    jobs = [Job(shared + tail, 40, arrival_step=2 * i) for i, tail in enumerate(tails)]
    plain, spec = engines[0].run(jobs), engines[SPECULATE].run(jobs)
    assert spec.outputs == plain.outputs
    assert spec.cached_tokens >= 5 * 64, f"too few prefix-cache hits: {spec.cached_tokens} tokens"
    assert spec.num_accepted > 0 and spec.num_rejected > 0


def test_preemption_keeps_speculative_output_exact(model_dir: Path) -> None:
    # 14 blocks of 16 tokens for 6 requests that each grow to 83 tokens: running ones are preempted.
    plain_engine = EngineRun(model_dir, speculate=0)
    prompts = echo_prompts(plain_engine, random_prompts(6, 6, 700, seed=5), num_echo=14)
    jobs = [Job(prompt, 50, arrival_step=i) for i, prompt in enumerate(prompts)]
    plain = plain_engine.run(jobs)
    small = EngineRun(model_dir, speculate=SPECULATE, num_blocks=14).run(jobs)
    assert small.outputs == plain.outputs
    assert small.num_preemptions > 0, "no preemption happened; use fewer blocks"
    assert small.num_accepted > 0


def test_eos_and_max_new_tokens_inside_accepted_candidates(engines: dict[int, EngineRun]) -> None:
    prompts = echo_prompts(engines[0], random_prompts(4, 20, 700, seed=3))
    reference = engines[0].run([Job(p, 60) for p in prompts]).outputs
    # EOS = the 41st reference token: the output must stop at its first occurrence, whatever step it came in.
    eos_jobs = [Job(p, 60, eos_token_ids=(out[40],)) for p, out in zip(prompts, reference)]
    spec = engines[SPECULATE].run(eos_jobs)
    for out, ref in zip(spec.outputs, reference):
        assert out == ref[: ref.index(ref[40]) + 1]
    assert spec.finish_reasons == ["eos_token"] * 4
    # max_new_tokens values that end in the middle of candidate runs (every length from 33 to 36).
    cut = engines[SPECULATE].run([Job(p, 33 + i) for i, p in enumerate(prompts)])
    assert cut.outputs == [ref[: 33 + i] for i, ref in enumerate(reference)]
    assert cut.finish_reasons == ["length"] * 4


def test_chunked_prefill_with_speculation(model_dir: Path) -> None:
    plain_engine = EngineRun(model_dir, speculate=0)
    prompts = echo_prompts(plain_engine, random_prompts(4, 40, 700, seed=8))
    jobs = [Job(prompt, 30, arrival_step=i) for i, prompt in enumerate(prompts)]
    plain = plain_engine.run(jobs)
    chunked = EngineRun(model_dir, speculate=SPECULATE, max_prefill_tokens=24).run(jobs)
    assert chunked.outputs == plain.outputs
    assert chunked.num_accepted > 0
