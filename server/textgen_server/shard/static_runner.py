"""ModelRunner with static shapes: every forward pass padded to a bucket shape (engine/buckets.py), warmed first.

What Gaudi's HPU graphs need, runnable on the CPU so that tests can prove it right here: the padded step gives
the same tokens as the unpadded one (the padding's KV goes to a scratch block or to slots nothing reads before they
are rewritten, and only the real rows' hidden states reach sampling: shard/static_layout.py), and every shape a
served step has was run by warmup (`shapes_seen` against `warmed_shapes`).

The router's side of the contract (a bucket-aware scheduler, SchedulerConfig.buckets): prefill groups within the
bucket limits, chunks no longer than --max-input-tokens, decode batches within --max-batch-size. One KV block is
kept back as the scratch block (Warmup reports one block less). Speculative decoding is refused in this mode.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import torch

from textgen_server.engine.buckets import (BucketConfig, BucketError, DecodeShape, PrefillShape,
                                           static_max_batch_size, warmup_shapes)
from textgen_server.models.attention_metadata import AttentionMetadata, build_attention_metadata
from textgen_server.models.kv_cache import PagedKVCache
from textgen_server.protocol import StepItem, WarmupResult, WarmupSpec
from textgen_server.shard.errors import InvalidStepError
from textgen_server.shard.runner import ModelRunner
from textgen_server.shard.static_layout import PaddedStep, pad_step, warmup_step

Shape = PrefillShape | DecodeShape
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BucketSizes:
    """TGI on Gaudi's three bucket settings (BATCH_BUCKET_SIZE, PREFILL_BATCH_BUCKET_SIZE,
    PAD_SEQUENCE_TO_MULTIPLE_OF); the limits come from Warmup."""

    batch: int = 8
    prefill_batch: int = 4
    pad_sequence: int = 128


def bucket_config(sizes: BucketSizes, spec: WarmupSpec, block_size: int) -> BucketConfig:
    """The bucket rules for the limits Warmup carries (the router's flags)."""
    max_batch = static_max_batch_size(spec.max_batch_size or None, spec.max_batch_total_tokens or None,
                                      spec.max_total_tokens)
    return BucketConfig(batch_bucket_size=sizes.batch, prefill_batch_bucket_size=sizes.prefill_batch,
                        pad_sequence_to_multiple_of=sizes.pad_sequence, max_input_tokens=spec.max_input_tokens,
                        max_total_tokens=spec.max_total_tokens, max_batch_prefill_tokens=spec.max_prefill_tokens,
                        max_batch_size=max_batch, block_size=block_size)


class StaticShapeRunner(ModelRunner):
    """A ModelRunner whose forward passes only ever have warmed, bucketed shapes."""

    DENSE_DECODE_ROWS = False  # its padding rows are not requests; graphs (HPU) need fixed buffers

    def __init__(self, *args: object, buckets: BucketSizes = BucketSizes(), warmup_enabled: bool = True,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.proposer is not None:
            raise ValueError("static shapes do not support speculative decoding: run with --speculate 0")
        self.buckets = buckets
        self.warmup_enabled = warmup_enabled    # WARMUP_ENABLED
        self.config: BucketConfig | None = None
        self.scratch_block = -1
        self.warmed_shapes: set[Shape] = set()
        self.shapes_seen: list[tuple[PrefillShape | None, DecodeShape | None]] = []
        self.num_real_tokens = 0
        self.num_padded_tokens = 0
        self.shape_warmup_seconds = 0.0

    def warmup(self, spec: WarmupSpec) -> WarmupResult:
        """The base warmup (KV cache, largest prefill, unpadded), then every bucket shape once on dummy rows."""
        self.config = None                        # the base warmup's own step runs unpadded
        result = super().warmup(spec)
        self.config = bucket_config(self.buckets, spec, result.block_size)
        self.scratch_block = result.num_blocks - 1
        started = time.perf_counter()
        self.warmed_shapes = set()
        if self.warmup_enabled:
            shapes = warmup_shapes(self.config)
            for shape in (*shapes.prefill, *shapes.decode):
                self._run_padded(warmup_step(self.config, shape, self.scratch_block, result.block_size))
                self.warmed_shapes.add(shape)
        self.shape_warmup_seconds = time.perf_counter() - started
        logger.info("static shapes: %d warmed in %.2f s (buckets batch %d, prefill batch %d, sequence %d; "
                    "batch bound %d)", len(self.warmed_shapes), self.shape_warmup_seconds, self.buckets.batch,
                    self.buckets.prefill_batch, self.buckets.pad_sequence, self.config.max_batch_size)
        self.shapes_seen = []
        num_blocks = result.num_blocks - 1        # the scratch block is never the router's
        return replace(result, num_blocks=num_blocks, max_supported_total_tokens=num_blocks * result.block_size,
                       duration_seconds=result.duration_seconds + self.shape_warmup_seconds)

    def _forward(self, items: list[StepItem], metadata: AttentionMetadata, cache: PagedKVCache) -> torch.Tensor:
        if self.config is None:
            return super()._forward(items, metadata, cache)
        try:
            padded = pad_step(items, self.config, self.scratch_block, cache.block_size)
        except BucketError as error:
            raise InvalidStepError(f"step outside the static shapes: {error}") from error
        self.shapes_seen.append((padded.prefill, padded.decode))
        self.num_real_tokens += len(padded.real_rows)
        self.num_padded_tokens += sum(len(item.token_ids) for item in padded.items)
        hidden = self._run_padded(padded)
        return hidden[:, padded.real_rows]          # [1, T_real, hidden], the unpadded layout

    def _run_padded(self, padded: PaddedStep) -> torch.Tensor:
        cache = self._require_cache()
        metadata = build_attention_metadata(padded.items, cache.block_size, self.device)
        with torch.inference_mode():
            return self.run_model(metadata, cache)

    def unwarmed_shapes(self) -> list[Shape]:
        """Shapes served that warmup did not run (empty when the contract holds)."""
        seen = {shape for pair in self.shapes_seen for shape in pair if shape is not None}
        return sorted(seen - self.warmed_shapes, key=repr)
