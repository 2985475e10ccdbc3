"""Each logits processor against a hand computation and against transformers' processor of the same name."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from textgen_server.sampling import processors

INF = float("-inf")


def _row(values: list[float]) -> torch.Tensor:
    return torch.tensor([values])


@pytest.mark.parametrize(
    ("scores", "history", "penalty", "expected"),
    [
        ([2.0, -2.0, 1.0], [0, 1], 2.0, [1.0, -4.0, 1.0]),        # seen positive halves, seen negative doubles
        ([2.0, -2.0, 1.0], [], 2.0, [2.0, -2.0, 1.0]),            # nothing seen: unchanged
        ([2.0, -2.0, 1.0], [0, 0, 0], 1.0, [2.0, -2.0, 1.0]),     # penalty 1.0 is off
    ],
)
def test_repetition_penalty(scores, history, penalty, expected) -> None:
    counts = processors.token_counts([history], 3, torch.device("cpu"))
    out = processors.apply_repetition_penalty(_row(scores), counts, torch.tensor([penalty]))
    assert out.tolist() == [expected]


@pytest.mark.parametrize(
    ("history", "penalty", "expected"),
    [
        ([0, 0, 1, 2], 1.0, [1.0 - 0.5, 1.0 - 0.25, 1.0 - 0.25]),  # count / 4 tokens so far
        ([0], 2.0, [1.0 - 2.0, 1.0, 1.0]),
        ([0, 1], 0.0, [1.0, 1.0, 1.0]),
    ],
)
def test_frequency_penalty_is_tgi_normalised(history, penalty, expected) -> None:
    counts = processors.token_counts([history], 3, torch.device("cpu"))
    out = processors.apply_frequency_penalty(_row([1.0, 1.0, 1.0]), counts, torch.tensor([penalty]))
    assert out[0].tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("top_k", "expected"),
    [(2, [3.0, INF, 2.0, INF]), (1, [3.0, INF, INF, INF]), (0, [3.0, 1.0, 2.0, 0.0]), (9, [3.0, 1.0, 2.0, 0.0])],
)
def test_top_k(top_k, expected) -> None:
    out = processors.apply_top_k(_row([3.0, 1.0, 2.0, 0.0]), torch.tensor([top_k]))
    assert out.tolist() == [expected]


def test_top_p_by_hand() -> None:
    # probabilities 0.5, 0.3, 0.2 (logits are their logs): top_p 0.7 keeps 0.5 and 0.3 (0.8 >= 0.7).
    scores = torch.log(torch.tensor([[0.3, 0.5, 0.2]]))
    out = processors.apply_top_p(scores, torch.tensor([0.7]))
    assert torch.isinf(out[0, 2]) and torch.isfinite(out[0, :2]).all()
    # top_p 0.5 keeps only the best; 1.0 keeps everything
    assert torch.isfinite(processors.apply_top_p(scores, torch.tensor([0.5]))[0]).tolist() == [False, True, False]
    assert torch.isfinite(processors.apply_top_p(scores, torch.tensor([1.0]))).all()


def test_temperature_by_hand() -> None:
    out = processors.apply_temperature(_row([1.0, -2.0]), torch.tensor([0.5]))
    assert out.tolist() == [[2.0, -4.0]]


def _reference_rows(scores: torch.Tensor, history: list[int], make) -> torch.Tensor:
    ids = torch.tensor([history])
    return torch.cat([make(v)(ids, scores[i : i + 1].clone()) for i, v in enumerate(PARAM_VALUES)])


PARAM_VALUES = [0.3, 0.6, 0.9, 0.95]


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (processors.apply_top_p, lambda v: TopPLogitsWarper(top_p=v)),
        (processors.apply_typical_p, lambda v: TypicalLogitsWarper(mass=v)),
        (processors.apply_temperature, lambda v: TemperatureLogitsWarper(temperature=v)),
        (processors.apply_top_k, lambda v: TopKLogitsWarper(top_k=int(v * 10))),
    ],
    ids=["top_p", "typical_p", "temperature", "top_k"],
)
def test_batched_rows_match_transformers_per_row(ours, reference) -> None:
    """One batch with a different parameter per row equals transformers' processor applied row by row."""
    scores = torch.randn(len(PARAM_VALUES), 40, generator=torch.Generator().manual_seed(0)) * 3
    params = torch.tensor([int(v * 10) for v in PARAM_VALUES]) if ours is processors.apply_top_k else torch.tensor(
        PARAM_VALUES
    )
    expected = _reference_rows(scores, [1, 2], reference)
    assert torch.allclose(ours(scores, params), expected)


def test_repetition_penalty_matches_transformers() -> None:
    scores = torch.randn(1, 40, generator=torch.Generator().manual_seed(1)) * 3
    history = [3, 5, 5, 7, 39]
    counts = processors.token_counts([history], 40, torch.device("cpu"))
    expected = RepetitionPenaltyLogitsProcessor(penalty=1.7)(torch.tensor([history]), scores.clone())
    assert torch.allclose(processors.apply_repetition_penalty(scores, counts, torch.tensor([1.7])), expected)


def test_typical_p_off_rows_untouched_in_mixed_batch() -> None:
    scores = torch.randn(2, 30, generator=torch.Generator().manual_seed(2))
    out = processors.apply_typical_p(scores, torch.tensor([1.0, 0.5]))
    assert torch.equal(out[0], scores[0])
    assert math.isinf(out[1].min().item())
