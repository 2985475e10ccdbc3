"""Sampling with speculation: seeded runs are reproducible and give the very tokens of the non-speculative sampler
(each position is drawn with the noise of its own (seed, index), as step-by-step decoding would), and the output
distribution is kept: on a 16-token vocabulary, tokens drawn with independent seeds with and without speculation
pass a two-sample chi-square test."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from spec_testlib import EngineRun, Job, echo_prompts, random_prompts
from textgen_server.protocol import SamplingParams
from textgen_server.speculation.adaptive import AcceptanceTracker

SAMPLING = SamplingParams(do_sample=True, temperature=0.6, top_k=40, top_p=0.95, typical_p=0.98,
                          repetition_penalty=1.02, frequency_penalty=0.01, top_n_tokens=2)


def test_seeded_sampling_with_speculation_is_reproducible_and_equals_no_speculation(repetitive_model_dir) -> None:
    model_dir: Path = repetitive_model_dir("llama")
    plain_engine = EngineRun(model_dir, speculate=0)
    prompts = echo_prompts(plain_engine, random_prompts(6, 10, 700, seed=31))
    jobs = [Job(p, 40, arrival_step=i, params=SamplingParams(**{**SAMPLING.__dict__, "seed": 100 + i}))
            for i, p in enumerate(prompts)]
    plain = plain_engine.run(jobs)
    engine = EngineRun(model_dir, speculate=3)
    first, second = engine.run(jobs), engine.run(jobs)
    assert first.outputs == second.outputs
    assert first.outputs == plain.outputs
    assert first.num_accepted > 0 and first.num_rejected > 0


def _chi_square_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: p = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("temperature", [1.5])
def test_speculation_keeps_the_sampling_distribution(repetitive_model_dir, temperature: float) -> None:
    model_dir: Path = repetitive_model_dir("llama", vocab_size=16)
    count, position = 400, 5
    prompts = [[3 + i % 11, 4 + i % 7, 3 + i % 11, 4 + i % 7] for i in range(count)]  # repeats: lookup proposes

    def draw(speculate: int, seed_base: int) -> tuple[Counter[int], int, int]:
        jobs = [Job(p, position + 1, params=SamplingParams(do_sample=True, temperature=temperature,
                                                           seed=seed_base + i)) for i, p in enumerate(prompts)]
        engine = EngineRun(model_dir, speculate=speculate)
        # 400 requests in one batch: the adaptive rule would propose nothing; this tests the verify sampler.
        engine.runner.acceptance = AcceptanceTracker(min_gain_per_row=0.0)
        result = engine.run(jobs)
        return Counter(out[position] for out in result.outputs), result.num_accepted, result.num_rejected

    plain, _, _ = draw(0, 0)
    spec, accepted, rejected = draw(3, 1_000_000)
    assert accepted > 20 and rejected > 20, (accepted, rejected)
    tokens = [t for t in set(plain) | set(spec) if plain[t] + spec[t] >= 10]
    statistic = sum((plain[t] - spec[t]) ** 2 / (plain[t] + spec[t]) for t in tokens)
    assert len(tokens) >= 4, f"too few distinct tokens to compare: {plain}, {spec}"
    assert statistic < _chi_square_critical(len(tokens) - 1), (statistic, plain, spec)
