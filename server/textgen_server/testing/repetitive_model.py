"""A random-weight model that repeats itself, for speculation tests and benchmarks (tests/speculation,
hack/bench-speculation.py).

Random tiny models never repeat an n-gram within a few hundred tokens, so n-gram lookup would find nothing to
propose and every test of accepted candidates would be vacuous; real models copy from their input all the time.
This variant scales the attention output projections down (x0.02) and sharpens the logits (x3): the next token
depends mostly on the current one, so the greedy text falls into repeats and, given its own earlier output in
the prompt, continues it again; attention still shifts some choices, so the KV cache of earlier positions (and
of verified candidates) still decides tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from textgen_server.testing.tiny_models import build_tiny_model

ATTENTION_SCALE = 0.02
LOGIT_SHARPEN = 3.0


def build_repetitive_model(path: Path, arch: str = "llama", dtype: str = "float64",
                           attention_scale: float = ATTENTION_SCALE, **overrides: Any) -> Path:
    """build_tiny_model(path, arch, dtype, **overrides), then the scaling above; returns the directory.
    attention_scale 0 removes attention's say entirely: the next token is a function of the current one."""
    build_tiny_model(path, arch, dtype=dtype, **overrides)
    weights_file = path / "model.safetensors"
    tensors = load_file(str(weights_file))
    for name in tensors:
        if name.endswith("o_proj.weight"):
            tensors[name] = tensors[name] * attention_scale
        elif name == "model.norm.weight":
            tensors[name] = tensors[name] * LOGIT_SHARPEN
    save_file(tensors, str(weights_file), metadata={"format": "pt"})
    return path
