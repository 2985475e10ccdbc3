"""The benchmark model of the server benchmarks (hack/bench-server.py, hack/bench-tp.py): a random-weight Llama
whose shape is set by the same flags in every script, built once per shape and reused."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--hidden-size, --layers, --intermediate-size, --heads, --kv-heads (defaults: the 51M Llama)."""
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate-size", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)


def build_bench_model(args: argparse.Namespace, workdir: Path) -> Path:
    """The model of that shape under `workdir`, built on the first call (real safetensors, config, tokenizer)."""
    from textgen_server.testing import build_tiny_model

    name = f"llama-h{args.hidden_size}-l{args.layers}-i{args.intermediate_size}-a{args.heads}-kv{args.kv_heads}"
    path = workdir / name
    if not (path / "model.safetensors").exists():
        build_tiny_model(path, "llama", hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                         intermediate_size=args.intermediate_size, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=2048)
    return path
