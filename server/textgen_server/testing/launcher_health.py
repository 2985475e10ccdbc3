"""Waiting for a textgen-launcher process to become ready, for tests and benchmarks (torch-free)."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_until_healthy(process: subprocess.Popen[Any], base_url: str, timeout: float, read_log: Callable[[], str],
                       poll_seconds: float = 0.2) -> None:
    """Polls GET /health until 200; raises RuntimeError with the launcher's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"launcher exited with {process.returncode} during startup:\n{read_log()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(poll_seconds)
    raise RuntimeError(f"launcher not healthy after {timeout:.0f} s:\n{read_log()}")
