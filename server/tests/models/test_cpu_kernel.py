"""The CPU attention kernel (query heads folded per key/value head) against torch SDPA with enable_gqa."""
from __future__ import annotations

import pytest
import torch

from textgen_server.models.attention import _grouped_sdpa_kernel, _sdpa_kernel, select_kernel


def _inputs(batch: int, heads: int, kv_heads: int, queries: int, keys: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(batch * 1000 + heads * 100 + queries)
    q = torch.randn(batch, heads, queries, 16, generator=generator)
    k = torch.randn(batch, kv_heads, keys, 16, generator=generator)
    v = torch.randn(batch, kv_heads, keys, 16, generator=generator)
    return q, k, v


def _causal_mask(batch: int, queries: int, keys: int, lengths: list[int]) -> torch.Tensor:
    """Each row's queries at its last positions (rows of different lengths), causal: [B, 1, Q, L]."""
    masks = []
    for length in lengths[:batch]:
        positions = torch.arange(length - queries, length).view(queries, 1)
        masks.append(torch.arange(keys).view(1, keys) <= positions)
    return torch.stack(masks)[:, None]


@pytest.mark.parametrize(("heads", "kv_heads", "queries"), [(12, 4, 1), (12, 4, 3), (8, 1, 2), (6, 3, 5), (12, 4, 8)])
def test_grouped_kernel_matches_sdpa_with_gqa(heads: int, kv_heads: int, queries: int) -> None:
    batch, keys = 3, 20
    q, k, v = _inputs(batch, heads, kv_heads, queries, keys)
    mask = _causal_mask(batch, queries, keys, [20, 9, 14])
    expected = _sdpa_kernel(q, k, v, mask, False, 0.25)
    got = _grouped_sdpa_kernel(q, k, v, mask, False, 0.25)
    assert got.shape == expected.shape == (batch, heads, queries, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Each query of a row differs: a mask repeated in the wrong order would mix them up.
    assert not torch.allclose(got[:, :, 0], got[:, :, -1]) or queries == 1


def test_broadcast_mask_and_no_mask() -> None:
    q, k, v = _inputs(1, 12, 4, 8, 30)
    mask = _causal_mask(1, 8, 30, [30])  # [1, 1, Q, L], as a prompt chunk passes it
    torch.testing.assert_close(_grouped_sdpa_kernel(q, k, v, mask, False, 0.3), _sdpa_kernel(q, k, v, mask, False, 0.3),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_grouped_sdpa_kernel(q, k, v, None, False, 0.3), _sdpa_kernel(q, k, v, None, False, 0.3),
                               rtol=1e-5, atol=1e-5)


def test_causal_mode_long_chunks_and_plain_heads_take_the_plain_kernel() -> None:
    q, k, v = _inputs(1, 12, 4, 9, 30)
    mask = _causal_mask(1, 9, 30, [30])
    torch.testing.assert_close(_grouped_sdpa_kernel(q, k, v, mask, False, 0.3), _sdpa_kernel(q, k, v, mask, False, 0.3))
    q, k, v = _inputs(2, 12, 4, 6, 6)
    torch.testing.assert_close(_grouped_sdpa_kernel(q, k, v, None, True, 0.3), _sdpa_kernel(q, k, v, None, True, 0.3))
    q, k, v = _inputs(2, 4, 4, 1, 9)
    torch.testing.assert_close(_grouped_sdpa_kernel(q, k, v, None, False, 0.3), _sdpa_kernel(q, k, v, None, False, 0.3))


def test_the_cpu_kernel_is_the_grouped_one() -> None:
    assert select_kernel("cpu") is _grouped_sdpa_kernel
