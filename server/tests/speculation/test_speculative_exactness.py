"""Greedy output with n-gram speculation (--speculate 1, 2, 4) is token-identical to the engine without it and to
transformers' `generate`, for the Llama, Mistral (sliding window 32) and Qwen2 test models.

The workload: 8 requests, up to 60 new tokens each (EOS ends some, as in transformers), arriving at steps 0, 0, 1, 3, 5, 8, 13, 21 (the batch grows while
others decode). Each prompt is 20..27 random tokens, the model's own 24-token continuation and its first 3 tokens
again (spec_testlib.echo_prompts), on the repetitive tiny variants: candidates are both accepted and rejected; the
test asserts both counts, so it cannot pass with speculation silently off.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from spec_testlib import EngineRun, Job, Reference, eos_ids, random_prompts

ARRIVALS = (0, 0, 1, 3, 5, 8, 13, 21)
MAX_NEW_TOKENS = 60


def build_jobs(model_dir: Path, reference: Reference) -> list[Job]:
    jobs = []
    for prompt, arrival in zip(random_prompts(len(ARRIVALS), 20, 700, seed=3), ARRIVALS):
        echo = reference.greedy(model_dir, prompt, 24)
        jobs.append(Job(prompt + echo + echo[:3], MAX_NEW_TOKENS, arrival, eos_token_ids=eos_ids(model_dir)))
    return jobs


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_greedy_with_ngram_speculation_matches_transformers(arch: str, repetitive_model_dir,
                                                            reference: Reference) -> None:
    model_dir: Path = repetitive_model_dir(arch)
    jobs = build_jobs(model_dir, reference)
    expected = [reference.greedy(model_dir, job.prompt, job.max_new_tokens) for job in jobs]
    plain = EngineRun(model_dir, speculate=0).run(jobs)
    assert plain.outputs == expected, "the engine without speculation differs from transformers"
    assert plain.num_proposed == 0
    for speculate in (1, 2, 4):
        result = EngineRun(model_dir, speculate=speculate).run(jobs)
        assert result.outputs == expected, f"--speculate {speculate} changed the greedy output"
        # Both outcomes happen, so the comparison covers accepted KV reuse and rejected-slot overwrites.
        assert result.num_accepted >= 15, f"--speculate {speculate}: only {result.num_accepted} accepted"
        assert result.num_rejected >= 5, f"--speculate {speculate}: only {result.num_rejected} rejected"
        assert result.num_steps < plain.num_steps  # accepted candidates saved steps
