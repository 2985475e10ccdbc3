"""The green-list watermark processor (sampling/watermark.py) and its place in sample_batch."""
from __future__ import annotations

import math

import pytest
import torch

from textgen_server.protocol import SamplingParams, WatermarkParams
from textgen_server.sampling import RequestState, sample_batch
from textgen_server.sampling.watermark import HASH_KEY, apply_watermark, green_list_size, green_mask

VOCAB = 1000


def test_green_list_is_tgis_seeded_permutation_prefix() -> None:
    # TGI's definition (utils/watermark.py): randperm(V) from a generator seeded with 15485863 * previous token,
    # the first int(V * gamma) ids. Restated here so that a change of key, seeding or size fails this test.
    generator = torch.Generator().manual_seed(15485863 * 42)
    expected = set(torch.randperm(VOCAB, generator=generator)[: int(VOCAB * 0.25)].tolist())
    mask = green_mask(42, VOCAB, 0.25)
    assert HASH_KEY == 15485863 and set(mask.nonzero().flatten().tolist()) == expected
    assert int(mask.sum()) == green_list_size(VOCAB, 0.25) == 250


def test_green_lists_depend_on_the_previous_token_only() -> None:
    assert torch.equal(green_mask(7, VOCAB, 0.5), green_mask(7, VOCAB, 0.5).clone())
    overlap = int((green_mask(7, VOCAB, 0.5) & green_mask(8, VOCAB, 0.5)).sum())
    assert 200 < overlap < 300  # two unrelated halves share about a quarter of the vocabulary


def test_apply_adds_delta_to_green_ids_of_watermarked_rows_only() -> None:
    scores = torch.randn(3, VOCAB)
    params = [WatermarkParams(gamma=0.5, delta=2.0), None, WatermarkParams(gamma=0.25, delta=0.5)]
    out = apply_watermark(scores, [5, 5, 9], params)
    assert torch.allclose(out[0] - scores[0], green_mask(5, VOCAB, 0.5).float() * 2.0)
    assert torch.equal(out[1], scores[1])
    assert torch.allclose(out[2] - scores[2], green_mask(9, VOCAB, 0.25).float() * 0.5)


def test_no_watermarked_row_returns_the_scores_untouched() -> None:
    scores = torch.randn(2, VOCAB)
    assert apply_watermark(scores, [1, 2], [None, None]) is scores


def _state(history: list[int], **params: object) -> RequestState:
    return RequestState(params=SamplingParams(**params), num_prompt_tokens=1, history=history)  # type: ignore[arg-type]


def test_greedy_choice_and_logprobs_are_those_of_the_biased_distribution() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, VOCAB)
    previous = 3
    green = green_mask(previous, VOCAB, 0.5)
    # The best red token beats every green one by less than delta: the watermark must flip the greedy choice.
    best_red = int(torch.where(green, -math.inf, logits[0]).argmax())
    logits[0, green] = logits[0, best_red] - 1.0 + torch.rand(int(green.sum())) * 0.5
    plain = sample_batch([1], logits, [_state([previous])])[0]
    marked = sample_batch([1], logits, [_state([previous], watermark=WatermarkParams(0.5, 2.0))])[0]
    assert plain.token.id == best_red and bool(green[marked.token.id])
    biased = (logits[0] + green.float() * 2.0).log_softmax(0)
    assert marked.token.logprob == pytest.approx(float(biased[marked.token.id]), abs=1e-5)


def test_each_row_is_seeded_by_its_own_last_token_whatever_the_batch() -> None:
    # A speculative step samples one row per position, each with the candidates before it in its history: the
    # green list of position i is seeded by the token before it, so the same row alone or in a batch agrees.
    torch.manual_seed(1)
    logits = torch.randn(3, VOCAB)
    watermark = WatermarkParams()
    states = [_state([4, 10], watermark=watermark, do_sample=True, seed=5),
              _state([4, 10, 11], watermark=watermark, do_sample=True, seed=5),
              _state([4, 10], do_sample=True, seed=5)]
    together = sample_batch([1, 1, 2], logits, states)
    alone = [sample_batch([1], logits[row:row + 1], [states[row]])[0] for row in range(3)]
    assert [g.token for g in together] == [g.token for g in alone]
