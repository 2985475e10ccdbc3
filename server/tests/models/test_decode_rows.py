"""The dense decode rows (models/decode_rows.py): attention over them equals attention over the gathered paged
blocks, step after step, through joins, catch-up after prefill chunks, speculative rewrites, departures,
readmission, growth and the memory cap (where the step falls back to the gather)."""
from __future__ import annotations

import pytest
import torch

from textgen_server.models.attention import StepContext, paged_attention_forward, select_kernel
from textgen_server.models.attention_metadata import build_attention_metadata, is_decode_item
from textgen_server.models.decode_rows import DecodeRows, StepRows
from textgen_server.models.kv_cache import KVCacheShape, PagedKVCache
from textgen_server.protocol import StepItem

SHAPE = KVCacheShape(num_layers=2, num_kv_heads=2, head_dim=8, block_size=4, dtype=torch.float32)
HEADS = 4


def _cache(num_blocks: int = 64) -> PagedKVCache:
    cache = PagedKVCache(SHAPE, num_blocks, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    for layer in range(SHAPE.num_layers):  # every slot holds something, as after earlier requests
        cache.keys[layer].copy_(torch.randn(cache.keys[layer].shape, generator=generator))
        cache.values[layer].copy_(torch.randn(cache.values[layer].shape, generator=generator))
    return cache


class _Layer(torch.nn.Module):
    def __init__(self, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx


def _step(cache: PagedKVCache, items: list[StepItem], rows: DecodeRows | None, seed: int) -> list[torch.Tensor]:
    """Every layer's attention output for `items` (new random q/k/v per layer), through the rows when given."""
    metadata = build_attention_metadata(items, SHAPE.block_size, torch.device("cpu"))
    prepared: StepRows | None = None
    if rows is not None:
        decode = [i for i in items if is_decode_item(i)]
        prepared = rows.prepare([i.request_id for i in decode],
                                [list(range(i.start_pos, i.start_pos + len(i.token_ids))) for i in decode],
                                [i.block_ids for i in decode])
    context = StepContext(metadata, cache, select_kernel("cpu"), None if prepared is None else (rows, prepared))
    tokens = metadata.input_ids.shape[1]
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for layer in range(SHAPE.num_layers):
        query = torch.randn(1, HEADS, tokens, SHAPE.head_dim, generator=generator)
        key = torch.randn(1, SHAPE.num_kv_heads, tokens, SHAPE.head_dim, generator=generator)
        value = torch.randn(1, SHAPE.num_kv_heads, tokens, SHAPE.head_dim, generator=generator)
        outputs.append(paged_attention_forward(_Layer(layer), query, key, value, None, textgen_step=context)[0])
    return outputs


def _run(steps: list[list[StepItem]], max_bytes: int = 1 << 30,
         forget: dict[int, list[int]] | None = None) -> DecodeRows:
    """Each step through the rows and through the gather, on two copies of one cache; every output equal."""
    with_rows, plain = _cache(), _cache()
    rows = DecodeRows(with_rows, max_bytes)
    for number, items in enumerate(steps):
        rows.forget((forget or {}).get(number, []))   # outside inference mode, as the runner's filter()
        with torch.inference_mode():                  # as the runner's step
            outputs = _step(with_rows, items, rows, number), _step(plain, items, None, number)
        for layer, (a, b) in enumerate(zip(*outputs)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {number}, layer {layer}")
    return rows


def _item(request_id: int, position: int, blocks: list[int], tokens: int = 1, candidates: int = 0) -> StepItem:
    return StepItem(request_id, [5] * tokens, position, blocks, True, num_speculative=candidates)


A, B, C = [0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]


def test_rows_join_with_their_cached_prefix_and_then_only_append() -> None:
    steps = [[_item(1, 5, A), _item(2, 9, B)]] + [[_item(1, 6 + s, A), _item(2, 10 + s, B)] for s in range(4)]
    rows = _run(steps)
    assert rows.owner == [1, 2] and rows.valid == [10, 14]


def test_a_request_catches_up_after_a_prefill_chunk_and_departures_compact_the_rows() -> None:
    steps = [
        [_item(1, 3, A), _item(2, 3, B), _item(3, 3, C)],
        [_item(1, 4, A), _item(2, 4, B), _item(3, 4, C)],
        [_item(1, 5, A, tokens=4), _item(3, 5, C)],   # 1 gets a prefill chunk (positions 5-8); 2 has left
        [_item(3, 6, C), _item(1, 9, A)],             # 1 is back in the decode batch: rows 6-8 come from the cache
    ]
    rows = _run(steps)
    assert sorted(rows.owner) == [1, 3] and len(rows.owner) == 2


def test_rejected_candidates_are_rewritten_and_never_attended() -> None:
    steps = [
        [_item(1, 4, A, tokens=4, candidates=3), _item(2, 4, B)],   # verify: 3 candidates
        [_item(1, 5, A, tokens=3, candidates=2), _item(2, 5, B)],   # only the first was accepted
        [_item(1, 6, A), _item(2, 6, B, tokens=3, candidates=2)],
        [_item(1, 7, A), _item(2, 7, B)],
    ]
    _run(steps)


def test_readmission_and_the_memory_cap() -> None:
    steps = [[_item(1, 4, A), _item(2, 4, B)], [_item(1, 5, A), _item(2, 5, B)], [_item(1, 6, A), _item(2, 6, B)]]
    rows = _run(steps, forget={2: [1]})   # 1 preempted and readmitted before step 2: refilled from the cache
    assert rows.owner == [2, 1]
    # rows x length x layers x (K, V) x heads x dim x 4 bytes: one row of 64 positions fits, two do not.
    one_row = 2 * SHAPE.num_layers * 64 * SHAPE.num_kv_heads * SHAPE.head_dim * 4
    capped = _run(steps, max_bytes=one_row)
    assert capped.owner == [] and capped.keys == []   # every step went through the gather


def test_rows_grow_keeping_their_content() -> None:
    long_a, long_b = list(range(0, 34)), list(range(34, 60))
    steps = [[_item(1, 60, long_a)], [_item(1, 61, long_a), _item(2, 100, long_b)],
             [_item(1, 130, long_a), _item(2, 101, long_b)]]
    rows = _run(steps)
    assert rows.keys[0].shape[2] >= 131 and rows.owner == [1, 2]


@pytest.mark.parametrize("window", [None, 3])
def test_sliding_window_masks_the_same(window: int | None) -> None:
    cache_rows, cache_plain = _cache(), _cache()
    rows = DecodeRows(cache_rows, 1 << 30)
    for number in range(3):
        items = [_item(1, 6 + number, A), _item(2, 9 + number, B)]
        metadata = build_attention_metadata(items, SHAPE.block_size, torch.device("cpu"))
        prepared = rows.prepare([1, 2], [[6 + number], [9 + number]], [A, B])
        assert prepared is not None
        generator = torch.Generator().manual_seed(number)
        q, k, v = (torch.randn(1, h, 2, SHAPE.head_dim, generator=generator) for h in (HEADS, 2, 2))
        outs = [paged_attention_forward(_Layer(0), q, k, v, None, sliding_window=window,
                                        textgen_step=StepContext(metadata, cache, select_kernel("cpu"), r))[0]
                for cache, r in ((cache_rows, (rows, prepared)), (cache_plain, None))]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)



def test_a_step_without_the_rows_rewinds_them_to_what_it_rewrote() -> None:
    """A verify step through the rows writes 3 candidates; none is accepted, and the next step (one that also
    computes a prompt, so not through the rows) rewrites those positions in the paged cache only. The rows must
    not serve the rejected candidates' keys afterwards."""
    with_rows, plain = _cache(), _cache()
    rows = DecodeRows(with_rows, 1 << 30)
    steps = [([_item(1, 4, A, tokens=4, candidates=3), _item(2, 4, B)], True),
             ([_item(1, 5, A, tokens=3, candidates=2), _item(2, 5, B), _item(3, 0, C, tokens=6)], False),
             ([_item(1, 8, A), _item(2, 6, B)], True)]
    for number, (items, through_rows) in enumerate(steps):
        if not through_rows:
            rows.rewind({item.request_id: item.start_pos for item in items})
        with torch.inference_mode():
            outputs = (_step(with_rows, items, rows if through_rows else None, number),
                       _step(plain, items, None, number))
        for a, b in zip(*outputs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {number}")
    assert rows.valid == [9, 7]
