"""Constrained-decoding tests reuse the server tier's launcher helpers (server/tests/server/server_testlib.py)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_testlib import Launch, launcher_factory  # noqa: E402


@pytest.fixture(scope="module")
def launch_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launch]:
    """Starts launchers shared by a whole test module."""
    with ExitStack() as stack:
        yield launcher_factory(tmp_path_factory.mktemp("launcher"), stack)
