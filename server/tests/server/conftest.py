"""Server-tier fixtures: launchers started per test or per module, and the transformers reference models."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from server_testlib import Launch, ReferenceModels, launcher_factory


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Starts launchers for one test; each is stopped at the end of the test."""
    with ExitStack() as stack:
        yield launcher_factory(tmp_path, stack)


@pytest.fixture(scope="module")
def launch_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launch]:
    """Starts launchers shared by a whole test module."""
    with ExitStack() as stack:
        yield launcher_factory(tmp_path_factory.mktemp("launcher"), stack)


@pytest.fixture(scope="session")
def reference() -> ReferenceModels:
    return ReferenceModels()
