"""Seeded sampling depends only on (seed, n); greedy is argmax; logprobs come from the processed distribution."""
from __future__ import annotations

import pytest
import torch

from textgen_server.protocol import SamplingParams
from textgen_server.sampling import RequestState, sample_batch
from textgen_server.sampling.seeded import mix_seed

VOCAB = 64


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 2


def _state(params: SamplingParams, history_len: int = 3, num_prompt: int = 3) -> RequestState:
    return RequestState(params=params, num_prompt_tokens=num_prompt, history=list(range(history_len)))


def test_mix_seed_differs_per_index_and_seed() -> None:
    seeds = {mix_seed(s, n) for s in range(20) for n in range(20)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)


def test_same_seed_same_token_alone_or_in_a_busy_batch() -> None:
    params = SamplingParams(do_sample=True, seed=1234, temperature=1.5)
    logits = _logits(6)
    alone = sample_batch([7], logits[3:4], [_state(params)])[0].token
    others = [_state(SamplingParams(do_sample=True, seed=s, top_k=5)) for s in range(5)]
    states = others[:3] + [_state(params)] + others[3:]
    in_batch = sample_batch(list(range(6)), logits, states)[3].token
    assert alone == in_batch


def test_sampling_follows_the_distribution_and_depends_on_n() -> None:
    """Over many (seed, n) draws, frequencies approach softmax(logits): the noise really samples."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    probs = logits.softmax(dim=1)[0]
    counts = torch.zeros(4)
    for n in range(2000):
        state = _state(SamplingParams(do_sample=True, seed=99), history_len=3 + n)
        counts[sample_batch([1], logits, [state])[0].token.id] += 1
    assert torch.allclose(counts / counts.sum(), probs, atol=0.03)


def test_greedy_is_argmax_with_logprob_and_top_n() -> None:
    logits = _logits(1, seed=5)
    generation = sample_batch([1], logits, [_state(SamplingParams(top_n_tokens=3))])[0]
    log_probs = logits.log_softmax(dim=1)[0]
    assert generation.token.id == int(logits.argmax())
    assert generation.token.logprob == pytest.approx(float(log_probs.max()), abs=1e-6)
    assert [t.id for t in generation.top_tokens] == log_probs.topk(3).indices.tolist()
    assert generation.top_tokens[0].logprob >= generation.top_tokens[1].logprob >= generation.top_tokens[2].logprob


def test_logprobs_are_of_the_processed_distribution() -> None:
    logits = _logits(1, seed=6)
    params = SamplingParams(do_sample=True, seed=3, top_k=2, top_n_tokens=4)
    generation = sample_batch([1], logits, [_state(params)])[0]
    top2 = logits[0].topk(2)
    renormalised = top2.values.log_softmax(dim=0)
    assert generation.token.id in top2.indices.tolist()
    assert generation.token.logprob == pytest.approx(float(renormalised[top2.indices.tolist().index(generation.token.id)]), abs=1e-5)
    assert generation.top_tokens[2].logprob == float("-inf")


def test_repetition_penalty_changes_greedy_choice() -> None:
    logits = torch.tensor([[3.0, 2.9, 0.0]])
    penalised = _state(SamplingParams(repetition_penalty=2.0), history_len=1, num_prompt=1)  # history [0]
    assert sample_batch([1], logits, [penalised])[0].token.id == 1
    assert sample_batch([1], logits, [_state(SamplingParams(), history_len=1, num_prompt=1)])[0].token.id == 0
