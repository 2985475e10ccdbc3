#!/usr/bin/env python3
"""Print the static shapes (and their counts) a Gaudi warmup runs for tgi-gaudi's documented configurations.

    .venv/bin/python hack/gaudi-shapes.py            # the table of server/docs/gaudi.md
    .venv/bin/python hack/gaudi-shapes.py --list     # also every shape

Pure arithmetic (textgen_server.engine.buckets): no device, no torch. Each configuration is the one tgi-gaudi's
README gives for Gaudi2 in BF16 (the batch bound is --max-batch-total-tokens // --max-total-tokens, as its router
derives it). "ours" counts what this server's rules produce; "tgi-gaudi" is its router's own enumeration.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from textgen_server.engine.buckets import (BucketConfig, counts_of, static_max_batch_size,  # noqa: E402
                                           tgi_gaudi_warmup_counts, warmup_shapes)

# name -> (cards, max input, max total, prefill tokens, batch total tokens, PREFILL_BATCH_BUCKET_SIZE,
#          BATCH_BUCKET_SIZE, PAD_SEQUENCE_TO_MULTIPLE_OF); tgi-gaudi README, "Running TGI with BF16 Precision".
CONFIGS: dict[str, tuple[int, int, int, int, int, int, int, int]] = {
    "Llama2-7B": (1, 1024, 2048, 2048, 65536, 2, 32, 256),
    "Llama2-70B": (8, 1024, 2048, 4096, 524288, 4, 256, 64),
    "Llama3.1-8B": (1, 1024, 2048, 2048, 65536, 2, 32, 256),
    "Llama3.1-70B": (8, 1024, 2048, 4096, 524288, 4, 256, 64),
    # The variant of the 8B configuration: batch 64 (--max-batch-size 64), same buckets.
    "Llama3.1-8B batch 64": (1, 1024, 2048, 2048, 131072, 2, 32, 256),
    # tgi-gaudi's defaults (BATCH 8 / PREFILL 4 / PAD 128) with TGI's default limits and batch 32.
    "defaults, batch 32": (1, 4095, 4096, 4145, 131072, 4, 8, 128),
}


def build(values: tuple[int, int, int, int, int, int, int, int]) -> tuple[int, BucketConfig]:
    cards, max_input, max_total, prefill, total_tokens, prefill_bucket, decode_bucket, pad = values
    batch = static_max_batch_size(None, total_tokens, max_total)
    return cards, BucketConfig(batch_bucket_size=decode_bucket, prefill_batch_bucket_size=prefill_bucket,
                               pad_sequence_to_multiple_of=pad, max_input_tokens=max_input,
                               max_total_tokens=max_total, max_batch_prefill_tokens=prefill, max_batch_size=batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print every shape too")
    args = parser.parse_args()
    print("| configuration | cards | input/total | prefill tokens | batch | buckets (prefill/decode/pad) "
          "| ours: prefill + decode = total (graphs with LIMIT_HPU_GRAPH) | tgi-gaudi: prefill + decode |")
    print("|---|--:|---|--:|--:|---|---|---|")
    for name, values in CONFIGS.items():
        cards, config = build(values)
        shapes = warmup_shapes(config)
        ours, theirs = counts_of(shapes), tgi_gaudi_warmup_counts(config)
        print(f"| {name} | {cards} | {config.max_input_tokens}/{config.max_total_tokens} | "
              f"{config.max_batch_prefill_tokens} | {config.max_batch_size} | {config.prefill_batch_bucket_size}/"
              f"{config.batch_bucket_size}/{config.pad_sequence_to_multiple_of} | {ours.num_prefill} + "
              f"{ours.num_decode} = {ours.total} ({shapes.num_graphs(False)}) | {theirs.num_prefill} + "
              f"{theirs.num_decode} |")
        if args.list:
            print("  prefill (batch x seq):", " ".join(f"{s.batch}x{s.seq_len}" for s in shapes.prefill))
            print("  decode (batch x query):", " ".join(f"{s.batch}x{s.num_query_tokens}" for s in shapes.decode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
