"""Static-shape arithmetic (engine/buckets.py): rounding, padding, limits, and a warmup set that is exactly
the set of shapes serving can produce (checked against brute force over every batch composition)."""
from __future__ import annotations

import itertools
import random

import pytest

from textgen_server.engine.buckets import (BucketConfig, BucketError, DecodeShape, PrefillShape, ShapeCounts,
                                           counts_of, decode_shape, max_prefill_batch, padding_overhead,
                                           prefill_shape, round_up, sequence_bucket, sequence_buckets,
                                           static_max_batch_size, tgi_gaudi_warmup_counts, warmup_shapes)


def cfg(**overrides: int) -> BucketConfig:
    base = dict(batch_bucket_size=8, prefill_batch_bucket_size=4, pad_sequence_to_multiple_of=128,
                max_input_tokens=1024, max_total_tokens=2048, max_batch_prefill_tokens=4096, max_batch_size=32)
    base.update(overrides)
    return BucketConfig(**base)


@pytest.mark.parametrize("number,multiple,expected", [
    (0, 8, 0), (1, 8, 8), (8, 8, 8), (9, 8, 16), (1, 1, 1), (255, 256, 256), (257, 256, 512)])
def test_round_up(number: int, multiple: int, expected: int) -> None:
    assert round_up(number, multiple) == expected


@pytest.mark.parametrize("pad,max_input,expected", [
    (128, 1024, [128, 256, 384, 512, 640, 768, 896, 1024]),
    (256, 1024, [256, 512, 768, 1024]),
    (300, 1024, [300, 600, 900, 1024]),        # the last bucket is --max-input-tokens, as tgi-gaudi's router
    (1024, 1024, [1024]),
    (64, 100, [64, 100]),
])
def test_sequence_buckets(pad: int, max_input: int, expected: list[int]) -> None:
    config = cfg(pad_sequence_to_multiple_of=pad, max_input_tokens=max_input, max_total_tokens=max_input + 1,
                 max_batch_prefill_tokens=max_input)
    assert sequence_buckets(config) == expected


@pytest.mark.parametrize("length,expected", [(1, 256), (255, 256), (256, 256), (257, 512), (769, 1000),
                                             (1000, 1000)])
def test_sequence_bucket_pads_and_caps(length: int, expected: int) -> None:
    config = cfg(pad_sequence_to_multiple_of=256, max_input_tokens=1000)
    assert sequence_bucket(config, length) == expected


@pytest.mark.parametrize("length", [0, 1001])
def test_sequence_bucket_refuses_lengths_outside_the_limits(length: int) -> None:
    with pytest.raises(BucketError, match="max-input-tokens"):
        sequence_bucket(cfg(max_input_tokens=1000), length)


@pytest.mark.parametrize("lengths,expected", [
    ([10], PrefillShape(4, 128)),
    ([10, 300], PrefillShape(4, 384)),         # every row padded to the longest prompt's bucket
    ([1024] * 4, PrefillShape(4, 1024)),
    ([1] * 5, PrefillShape(8, 128)),
    ([1] * 32, PrefillShape(32, 128)),         # 4096 // 128 = 32, capped by max_batch_size 32
])
def test_prefill_shape(lengths: list[int], expected: PrefillShape) -> None:
    assert prefill_shape(cfg(), lengths) == expected


def test_prefill_shape_refuses_more_prompts_than_the_budget() -> None:
    with pytest.raises(BucketError, match="exceed the prefill limit of 4"):
        prefill_shape(cfg(), [1024] * 5)   # 4096 // 1024 = 4


@pytest.mark.parametrize("seq_bucket,expected", [(128, 32), (1024, 4), (4096, 1)])
def test_max_prefill_batch(seq_bucket: int, expected: int) -> None:
    assert max_prefill_batch(cfg(), seq_bucket) == expected


@pytest.mark.parametrize("num_seqs,speculative,expected", [
    (1, 0, DecodeShape(8, 1)), (8, 0, DecodeShape(8, 1)), (9, 0, DecodeShape(16, 1)), (32, 0, DecodeShape(32, 1)),
    (3, 2, DecodeShape(8, 3))])
def test_decode_shape(num_seqs: int, speculative: int, expected: DecodeShape) -> None:
    assert decode_shape(cfg(num_speculative=speculative), num_seqs) == expected


@pytest.mark.parametrize("num_seqs", [0, 33])
def test_decode_shape_refuses_batches_outside_the_limit(num_seqs: int) -> None:
    with pytest.raises(BucketError, match="max-batch-size"):
        decode_shape(cfg(), num_seqs)


@pytest.mark.parametrize("overrides,message", [
    ({"pad_sequence_to_multiple_of": 2048}, "PAD_SEQUENCE_TO_MULTIPLE_OF"),
    ({"max_batch_prefill_tokens": 1000}, "max-batch-prefill-tokens"),
    ({"max_total_tokens": 1024}, "max_total_tokens"),
    ({"batch_bucket_size": 0}, "batch_bucket_size"),
])
def test_config_refuses_unservable_limits(overrides: dict[str, int], message: str) -> None:
    with pytest.raises(BucketError, match=message):
        cfg(**overrides)


@pytest.mark.parametrize("max_batch_size,total_tokens,max_total,expected", [
    (32, None, 2048, 32), (None, 65536, 2048, 32), (None, 524288, 2048, 256), (64, 65536, 2048, 64)])
def test_static_max_batch_size(max_batch_size: int | None, total_tokens: int | None, max_total: int,
                               expected: int) -> None:
    assert static_max_batch_size(max_batch_size, total_tokens, max_total) == expected


def test_static_max_batch_size_needs_a_bound() -> None:
    with pytest.raises(BucketError, match="--max-batch-size"):
        static_max_batch_size(None, None, 2048)


def _served_shapes(config: BucketConfig, lengths: list[int]) -> tuple[set[PrefillShape], set[DecodeShape]]:
    """Brute force: the shape of every prefill step any multiset of prompt lengths within the limits makes."""
    prefill = set()
    for seq_len in lengths:
        for n in range(1, config.max_batch_size + 1):
            try:
                prefill.add(prefill_shape(config, [seq_len] * n))
            except BucketError:
                break
    decode = {decode_shape(config, n) for n in range(1, config.max_batch_size + 1)}
    return prefill, decode


@pytest.mark.parametrize("overrides", [
    {}, {"pad_sequence_to_multiple_of": 100, "max_input_tokens": 350, "max_total_tokens": 400,
         "max_batch_prefill_tokens": 700, "max_batch_size": 9, "batch_bucket_size": 4,
         "prefill_batch_bucket_size": 3},
    {"prefill_batch_bucket_size": 1, "batch_bucket_size": 1, "max_batch_size": 5},
])
def test_warmup_shapes_are_exactly_the_served_shapes(overrides: dict[str, int]) -> None:
    config = cfg(**overrides)
    prefill, decode = _served_shapes(config, list(range(1, config.max_input_tokens + 1)))
    shapes = warmup_shapes(config)
    assert set(shapes.prefill) == prefill and set(shapes.decode) == decode
    assert len(set(shapes.prefill)) == len(shapes.prefill)           # no shape twice
    assert list(shapes.prefill) == sorted(shapes.prefill)


def test_random_mixed_batches_never_leave_the_warmed_set() -> None:
    config = cfg(pad_sequence_to_multiple_of=96, max_input_tokens=500, max_total_tokens=600,
                 max_batch_prefill_tokens=1500, max_batch_size=12, prefill_batch_bucket_size=3)
    warmed = warmup_shapes(config)
    rng = random.Random(0)
    for _ in range(2000):
        lengths = [rng.randint(1, config.max_input_tokens) for _ in range(rng.randint(1, 12))]
        try:
            shape = prefill_shape(config, lengths)
        except BucketError:
            continue   # the scheduler splits such a group; each part is a served shape
        assert shape in warmed.prefill
    assert all(decode_shape(config, n) in warmed.decode for n in range(1, 13))


# The configurations of tgi-gaudi's README (Gaudi2, BF16), with our counts and tgi-gaudi's enumeration.
README_CONFIGS = {
    # Llama3.1-8B, 1 card: --max-input 1024 --max-total 2048 --max-batch-prefill-tokens 2048,
    # (by hand: buckets 256/512/768/1024 hold 8/4/2/2 prompts -> 4+2+1+1 = 8 prefill shapes, listed below)
    # --max-batch-total-tokens 65536 (batch 32), PREFILL_BATCH_BUCKET_SIZE=2 BATCH_BUCKET_SIZE=32 PAD=256
    "llama3.1-8b": (dict(batch_bucket_size=32, prefill_batch_bucket_size=2, pad_sequence_to_multiple_of=256,
                         max_input_tokens=1024, max_total_tokens=2048, max_batch_prefill_tokens=2048,
                         max_batch_size=32), ShapeCounts(8, 1), ShapeCounts(4, 1)),
    # Llama3.1-70B, 8 cards: prefill 4096, --max-batch-total-tokens 524288 (batch 256), buckets 4/256/64.
    # By hand: seq buckets 64k (k = 1..16) hold floor(64 / k) prompts, in ceil(that / 4) batch buckets:
    # 16+8+6+4+3+3+3+2+2+2+2+2+1+1+1+1 = 57 prefill shapes; tgi-gaudi: batch 4 only x 16 buckets.
    "llama3.1-70b": (dict(batch_bucket_size=256, prefill_batch_bucket_size=4, pad_sequence_to_multiple_of=64,
                          max_input_tokens=1024, max_total_tokens=2048, max_batch_prefill_tokens=4096,
                          max_batch_size=256), ShapeCounts(57, 1), ShapeCounts(16, 1)),
}


@pytest.mark.parametrize("name", sorted(README_CONFIGS))
def test_readme_configuration_counts(name: str) -> None:
    settings, ours, theirs = README_CONFIGS[name]
    config = BucketConfig(**settings)
    assert counts_of(warmup_shapes(config)) == ours
    assert tgi_gaudi_warmup_counts(config) == theirs


def test_llama_8b_prefill_shapes_listed() -> None:
    settings = README_CONFIGS["llama3.1-8b"][0]
    shapes = warmup_shapes(BucketConfig(**settings))
    assert [(s.batch, s.seq_len) for s in shapes.prefill] == [
        (2, 256), (2, 512), (2, 768), (2, 1024), (4, 256), (4, 512), (6, 256), (8, 256)]


def test_tgi_gaudi_enumeration_skips_prefill_when_the_bucket_exceeds_the_batch() -> None:
    # tgi-gaudi's quirk: multiples of PREFILL_BATCH_BUCKET_SIZE up to max_prefill_tokens // max_input (2 here)
    config = cfg(prefill_batch_bucket_size=4, max_batch_prefill_tokens=2048)
    assert tgi_gaudi_warmup_counts(config).num_prefill == 0
    assert counts_of(warmup_shapes(config)).num_prefill > 0


def test_num_graphs_follows_limit_hpu_graph() -> None:
    shapes = warmup_shapes(cfg())
    assert shapes.num_graphs(hpu_graphs_for_prefill=False) == len(shapes.decode)
    assert shapes.num_graphs(hpu_graphs_for_prefill=True) == shapes.num_shapes


@pytest.mark.parametrize("lengths,expected", [([128], 4.0), ([128] * 4, 1.0), ([100, 28, 128, 128], 4 * 128 / 384)])
def test_padding_overhead(lengths: list[int], expected: float) -> None:
    assert padding_overhead(cfg(), lengths) == pytest.approx(expected)


def test_every_row_reads_blocks_for_max_total_tokens() -> None:
    assert cfg(max_total_tokens=2048, block_size=16).num_context_blocks == 128
    assert cfg(max_total_tokens=2049, block_size=16).num_context_blocks == 129


def test_shape_ordering_is_total() -> None:
    shapes = [PrefillShape(b, s) for b, s in itertools.product((8, 4), (256, 128))]
    assert sorted(shapes) == [PrefillShape(4, 128), PrefillShape(4, 256), PrefillShape(8, 128), PrefillShape(8, 256)]
