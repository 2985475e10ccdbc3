"""Fixtures of the speculation tests: repetitive tiny models (spec_testlib.py), built once per session."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from spec_testlib import Reference
from textgen_server.testing.repetitive_model import build_repetitive_model


@pytest.fixture(scope="session")
def repetitive_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    built: dict[tuple[Any, ...], Path] = {}

    def factory(arch: str = "llama", **overrides: Any) -> Path:
        key = (arch, tuple(sorted(overrides.items())))
        if key not in built:
            name = "-".join(["repetitive", arch, *(f"{k}={v}" for k, v in sorted(overrides.items()))])
            built[key] = build_repetitive_model(tmp_path_factory.mktemp(name), arch, **overrides)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference()
