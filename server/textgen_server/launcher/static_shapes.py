"""--static-shapes: serve with TGI on Gaudi's bucketed static shapes on any device (torch-free).

On Gaudi the HPU graphs need them; on the CPU the switch exists so that tests and benchmarks run the same
static-shape engine here (shard/static_runner.py pads, engine/buckets.py enumerates, the scheduler stays within the
buckets). The bucket sizes and WARMUP_ENABLED come from TGI on Gaudi's variables (gaudi/config.py, defaults 8 / 4 /
128 / true), so with the switch on those four are applied whatever the device.
"""
from __future__ import annotations

from textgen_server.engine.buckets import BucketConfig, BucketError, static_max_batch_size
from textgen_server.gaudi.config import GaudiConfig

# TGI on Gaudi's variables that --static-shapes applies on every device.
APPLIED_ENV = frozenset({"BATCH_BUCKET_SIZE", "PREFILL_BATCH_BUCKET_SIZE", "PAD_SEQUENCE_TO_MULTIPLE_OF",
                         "WARMUP_ENABLED"})


def build_buckets(gaudi: GaudiConfig, max_input_tokens: int, max_total_tokens: int, max_batch_prefill_tokens: int,
                  max_batch_size: int | None, max_batch_total_tokens: int | None,
                  speculate: int) -> BucketConfig:
    """The bucket rules for these limits; raises BucketError naming the setting that makes them impossible."""
    if speculate:
        raise BucketError(f"--static-shapes does not support speculative decoding (--speculate {speculate}); "
                          "set --speculate 0 or turn --static-shapes off")
    return BucketConfig(batch_bucket_size=gaudi.batch_bucket_size,
                        prefill_batch_bucket_size=gaudi.prefill_batch_bucket_size,
                        pad_sequence_to_multiple_of=gaudi.pad_sequence_to_multiple_of,
                        max_input_tokens=max_input_tokens, max_total_tokens=max_total_tokens,
                        max_batch_prefill_tokens=max_batch_prefill_tokens,
                        max_batch_size=static_max_batch_size(max_batch_size, max_batch_total_tokens,
                                                             max_total_tokens))
