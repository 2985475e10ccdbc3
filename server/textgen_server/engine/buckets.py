"""Static shapes for graph-compiled devices (Gaudi's HPU graphs): bucket arithmetic and the warmup's shape list.

A graph runs only the shape it was captured with, so every forward pass is padded to one of a small, known set:
- a decode step of n sequences runs as `round_up(n, BATCH_BUCKET_SIZE)` rows of `1 + speculative` query tokens;
- a prefill step of n prompts runs as `round_up(n, PREFILL_BATCH_BUCKET_SIZE)` rows, each padded to the sequence
  bucket of its longest prompt: `round_up(length, PAD_SEQUENCE_TO_MULTIPLE_OF)`, the last bucket being
  --max-input-tokens itself (as tgi-gaudi's router enumerates them);
- every row reads the same number of KV blocks, ceil(--max-total-tokens / block_size) (unused ones masked), so
  the total length bound is part of the static shape rather than a new shape per context length.

How many prompts a prefill step may hold depends on their bucket: n <= max(1, min(prefill_tokens // bucket,
max_batch_size)), so short prompts batch more (tgi-gaudi counts every prompt as --max-input-tokens long, so it
allows prefill_tokens // max_input_tokens whatever the length). `warmup_shapes` enumerates exactly the shapes
these rules can produce; `tgi_gaudi_warmup_counts` is tgi-gaudi's own enumeration (router/client/src/client.rs),
kept for comparison in the docs and hack/gaudi-shapes.py.

What serving must do for the warmed set to be complete (the static-shape scheduler's obligations): a prompt is
prefilled whole in one step (so --max-batch-prefill-tokens >= --max-input-tokens, checked here), and a running
sequence is never recomputed (no preemption: its KV for prompt + max_new_tokens is reserved at admission), since a
recompute would prefill a prompt longer than --max-input-tokens. Pure Python: no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


class BucketError(ValueError):
    """Limits that no static-shape plan can serve; the message names the settings to change."""


def round_up(number: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= `number` (number >= 0, multiple >= 1)."""
    return -(-number // multiple) * multiple


@dataclass(frozen=True, order=True)
class PrefillShape:
    """A prefill forward pass: `batch` rows of `seq_len` query tokens."""

    batch: int
    seq_len: int


@dataclass(frozen=True, order=True)
class DecodeShape:
    """A decode forward pass: `batch` rows of `num_query_tokens` (1 + speculative candidates) tokens."""

    batch: int
    num_query_tokens: int = 1


@dataclass(frozen=True)
class BucketConfig:
    """The settings the shapes depend on: TGI on Gaudi's three bucket sizes and the launcher's limits."""

    batch_bucket_size: int            # BATCH_BUCKET_SIZE
    prefill_batch_bucket_size: int    # PREFILL_BATCH_BUCKET_SIZE
    pad_sequence_to_multiple_of: int  # PAD_SEQUENCE_TO_MULTIPLE_OF
    max_input_tokens: int
    max_total_tokens: int
    max_batch_prefill_tokens: int
    max_batch_size: int
    block_size: int = 16
    num_speculative: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_bucket_size", "prefill_batch_bucket_size", "pad_sequence_to_multiple_of",
                     "max_input_tokens", "max_batch_prefill_tokens", "max_batch_size", "block_size"):
            if getattr(self, name) < 1:
                raise BucketError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_total_tokens <= self.max_input_tokens:
            raise BucketError(f"max_total_tokens ({self.max_total_tokens}) must exceed max_input_tokens "
                              f"({self.max_input_tokens})")
        if self.pad_sequence_to_multiple_of > self.max_input_tokens:
            raise BucketError(f"PAD_SEQUENCE_TO_MULTIPLE_OF ({self.pad_sequence_to_multiple_of}) exceeds "
                              f"--max-input-tokens ({self.max_input_tokens}); lower it")
        if self.max_batch_prefill_tokens < self.max_input_tokens:
            raise BucketError(f"static shapes prefill a prompt in one step: --max-batch-prefill-tokens "
                              f"({self.max_batch_prefill_tokens}) must be at least --max-input-tokens "
                              f"({self.max_input_tokens})")
        if self.num_speculative < 0:
            raise BucketError(f"num_speculative must be >= 0, got {self.num_speculative}")

    @property
    def num_context_blocks(self) -> int:
        """KV blocks every row's block table holds: enough for --max-total-tokens."""
        return -(-self.max_total_tokens // self.block_size)


def static_max_batch_size(max_batch_size: int | None, max_batch_total_tokens: int | None,
                          max_total_tokens: int) -> int:
    """The decode batch bound the buckets need, as tgi-gaudi's router derives it: --max-batch-size when set,
    else --max-batch-total-tokens // --max-total-tokens; without either there is no finite shape set."""
    if max_batch_size is not None:
        return max_batch_size
    if max_batch_total_tokens is not None:
        return max(1, max_batch_total_tokens // max_total_tokens)
    raise BucketError("static shapes need a batch bound: set --max-batch-size (or --max-batch-total-tokens, "
                      "which gives --max-batch-total-tokens // --max-total-tokens sequences)")


def sequence_buckets(config: BucketConfig) -> list[int]:
    """Padded prompt lengths, ascending: multiples of PAD_SEQUENCE_TO_MULTIPLE_OF, then --max-input-tokens."""
    pad = config.pad_sequence_to_multiple_of
    buckets = list(range(pad, config.max_input_tokens + 1, pad))
    if buckets[-1] < config.max_input_tokens:
        buckets.append(config.max_input_tokens)
    return buckets


def sequence_bucket(config: BucketConfig, length: int) -> int:
    """The padded length of a prompt (chunk) of `length` query tokens."""
    if not 1 <= length <= config.max_input_tokens:
        raise BucketError(f"a prefill of {length} tokens is outside 1..--max-input-tokens "
                          f"({config.max_input_tokens}); static shapes cannot run it")
    return min(round_up(length, config.pad_sequence_to_multiple_of), config.max_input_tokens)


def max_prefill_batch(config: BucketConfig, seq_bucket: int) -> int:
    """Most prompts one prefill step may hold when its longest prompt pads to `seq_bucket` (at least one)."""
    return max(1, min(config.max_batch_prefill_tokens // seq_bucket, config.max_batch_size))


def prefill_shape(config: BucketConfig, prompt_lengths: list[int]) -> PrefillShape:
    """The padded shape of a prefill step over these prompts (query tokens each); raises if over the limits."""
    if not prompt_lengths:
        raise BucketError("a prefill step needs at least one prompt")
    seq_len = sequence_bucket(config, max(prompt_lengths))
    if len(prompt_lengths) > max_prefill_batch(config, seq_len):
        raise BucketError(f"{len(prompt_lengths)} prompts padded to {seq_len} exceed the prefill limit of "
                          f"{max_prefill_batch(config, seq_len)} (--max-batch-prefill-tokens "
                          f"{config.max_batch_prefill_tokens}, --max-batch-size {config.max_batch_size})")
    return PrefillShape(round_up(len(prompt_lengths), config.prefill_batch_bucket_size), seq_len)


def decode_shape(config: BucketConfig, num_seqs: int) -> DecodeShape:
    """The padded shape of a decode step over `num_seqs` sequences."""
    if not 1 <= num_seqs <= config.max_batch_size:
        raise BucketError(f"a decode step of {num_seqs} sequences is outside 1..--max-batch-size "
                          f"({config.max_batch_size})")
    return DecodeShape(round_up(num_seqs, config.batch_bucket_size), 1 + config.num_speculative)


@dataclass(frozen=True)
class WarmupShapes:
    """Every shape serving can produce, in the order warmup runs them (decode after prefill, smallest first)."""

    prefill: tuple[PrefillShape, ...]
    decode: tuple[DecodeShape, ...]

    @property
    def num_shapes(self) -> int:
        return len(self.prefill) + len(self.decode)

    def num_graphs(self, hpu_graphs_for_prefill: bool) -> int:
        """HPU graphs captured: decode always (with ENABLE_HPU_GRAPH), prefill unless LIMIT_HPU_GRAPH."""
        return len(self.decode) + (len(self.prefill) if hpu_graphs_for_prefill else 0)


def warmup_shapes(config: BucketConfig) -> WarmupShapes:
    """The exact image of prefill_shape and decode_shape over every input the limits allow."""
    prefill = sorted({PrefillShape(round_up(n, config.prefill_batch_bucket_size), seq_len)
                      for seq_len in sequence_buckets(config)
                      for n in range(1, max_prefill_batch(config, seq_len) + 1)})
    decode = sorted({decode_shape(config, n) for n in range(1, config.max_batch_size + 1)})
    return WarmupShapes(tuple(prefill), tuple(decode))


@dataclass(frozen=True)
class ShapeCounts:
    """How many shapes a warmup runs."""

    num_prefill: int
    num_decode: int

    @property
    def total(self) -> int:
        return self.num_prefill + self.num_decode


def tgi_gaudi_warmup_counts(config: BucketConfig) -> ShapeCounts:
    """tgi-gaudi's warmup enumeration (router/client/src/client.rs, `warmup`), for comparison: prefill batch
    sizes are the multiples of PREFILL_BATCH_BUCKET_SIZE up to min(prefill_tokens // max_input, max batch) (none
    when the bucket is larger), times every sequence bucket; decode sizes the multiples of BATCH_BUCKET_SIZE up
    to the max batch size."""
    decode_sizes = range(config.batch_bucket_size, config.max_batch_size + 1, config.batch_bucket_size)
    max_prefill = min(config.max_batch_prefill_tokens // config.max_input_tokens, config.max_batch_size)
    prefill_sizes = range(config.prefill_batch_bucket_size, max_prefill + 1, config.prefill_batch_bucket_size)
    return ShapeCounts(len(prefill_sizes) * len(sequence_buckets(config)), len(decode_sizes))


def counts_of(shapes: WarmupShapes) -> ShapeCounts:
    return ShapeCounts(len(shapes.prefill), len(shapes.decode))


def padding_overhead(config: BucketConfig, prompt_lengths: list[int]) -> float:
    """Padded tokens / real tokens of one prefill step (1.0 = no padding); what the buckets cost in compute."""
    shape = prefill_shape(config, prompt_lengths)
    return shape.batch * shape.seq_len / math.fsum(prompt_lengths)
