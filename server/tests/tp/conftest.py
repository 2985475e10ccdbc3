"""Tensor-parallel test fixtures: float64 test models whose heads divide by 2 and 4, launchers shared per module.

The models are stored in float64 and served in float64 (--dtype auto), and the reference is transformers'
float64 `generate`: N ranks sum partial products in another order than one process does, and in float64 that
changes logits by ~1e-15, far below any top-2 gap the tests meet (checked, see tp_testlib.ReferenceCache), so a
token mismatch means a real bug, not rounding.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))  # server_testlib, server_workload

from server_testlib import LauncherProcess, launcher_factory  # noqa: E402
from tp_testlib import TP_MODEL_OVERRIDES, ReferenceCache  # noqa: E402


@pytest.fixture(scope="session")
def tp_model_dir(tiny_model_dir: Callable[..., Path]) -> Callable[[str], Path]:
    return lambda arch: tiny_model_dir(arch, **TP_MODEL_OVERRIDES)


@pytest.fixture(scope="module")
def module_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LauncherProcess]]:
    """Starts launchers shared by a module (stopped at its end); flags as textgen-launcher's command line."""
    workdir = tmp_path_factory.mktemp("tp-launcher")
    with ExitStack() as stack:
        yield launcher_factory(workdir, stack)


@pytest.fixture(scope="session")
def float64_reference() -> ReferenceCache:
    return ReferenceCache()
