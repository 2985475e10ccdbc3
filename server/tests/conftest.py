"""Shared fixtures for the server tests: tiny random-weight models built offline, once per session.

Use `tiny_model_dir("llama")` (also "mistral" with sliding_window=32, "qwen2" with q/k/v biases), or the
shortcuts `tiny_llama_dir`, `tiny_mistral_dir`, `tiny_qwen2_dir`. Overrides give a separate model, e.g.
`tiny_model_dir("llama", num_hidden_layers=4)`. Every directory is a real checkpoint: transformers' own
`from_pretrained` loads it, so tests can compare our server with `model.generate`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

TinyModelFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> TinyModelFactory:
    """A function (arch, seed=0, **config_overrides) -> model directory, cached for the whole session."""
    # Imported here so that torch-free test folders (engine) can be collected without loading torch.
    from textgen_server.testing import build_tiny_model

    built: dict[tuple[Any, ...], Path] = {}

    def factory(arch: str = "llama", seed: int = 0, **overrides: Any) -> Path:
        key = (arch, seed, tuple(sorted(overrides.items())))
        if key not in built:
            name = "-".join([arch, str(seed), *(f"{k}={v}" for k, v in sorted(overrides.items()))])
            built[key] = build_tiny_model(tmp_path_factory.mktemp(name), arch, seed=seed, **overrides)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_dir: TinyModelFactory) -> Path:
    return tiny_model_dir("llama")


@pytest.fixture(scope="session")
def tiny_mistral_dir(tiny_model_dir: TinyModelFactory) -> Path:
    return tiny_model_dir("mistral")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tiny_model_dir: TinyModelFactory) -> Path:
    return tiny_model_dir("qwen2")
