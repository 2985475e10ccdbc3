"""Shard processes: spawn, wait for their sockets, watch them, stop them.

Shards run in their own session so that a Ctrl-C in a terminal reaches only the launcher (which drains
gracefully and then stops them), and they get SIGTERM from the kernel if the launcher itself dies, so a
crashed launcher never leaves orphans holding memory.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
SOCKET_POLL_SECONDS = 0.1


class ShardStartError(RuntimeError):
    """A shard exited or did not open its socket in time; the message says which and where to look."""


@dataclass(frozen=True)
class ShardSpec:
    """How to start one shard process."""

    model_path: Path
    uds_path: str                  # prefix; the shard listens on f"{uds_path}-{rank}"
    rank: int
    world_size: int
    dtype: str | None
    kv_cache_memory: int | None

    @property
    def socket_path(self) -> str:
        return f"{self.uds_path}-{self.rank}"


def build_shard_command(spec: ShardSpec) -> list[str]:
    """The shard's command line (pure, so tests can check it)."""
    command = [sys.executable, "-m", "textgen_server.shard", "--model-path", str(spec.model_path),
               "--uds-path", spec.uds_path, "--rank", str(spec.rank), "--world-size", str(spec.world_size)]
    if spec.dtype is not None:
        command += ["--dtype", spec.dtype]
    if spec.kv_cache_memory is not None:
        command += ["--kv-cache-memory", str(spec.kv_cache_memory)]
    return command


def _die_with_parent() -> None:
    # Runs in the child between fork and exec (Linux only; elsewhere the launcher's own cleanup must do).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass


class ShardProcess:
    """One running shard. Its stdout/stderr go to the launcher's, so its logs and tracebacks are visible."""

    def __init__(self, spec: ShardSpec, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.process = process

    @classmethod
    async def spawn(cls, spec: ShardSpec) -> "ShardProcess":
        if os.path.exists(spec.socket_path):  # a leftover from a killed run would look "ready" at once
            os.unlink(spec.socket_path)
        command = build_shard_command(spec)
        logger.info("starting shard %d: %s", spec.rank, " ".join(command))
        process = await asyncio.create_subprocess_exec(*command, start_new_session=True,
                                                       preexec_fn=_die_with_parent)
        return cls(spec, process)

    async def wait_ready(self, timeout: float) -> None:
        """Returns once the shard's socket exists; raises ShardStartError if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.spec.socket_path):
            if self.process.returncode is not None:
                raise ShardStartError(f"shard {self.spec.rank} exited with code {self.process.returncode} before "
                                      "opening its socket; its error is in the log above")
            if time.monotonic() > deadline:
                raise ShardStartError(f"shard {self.spec.rank} did not open {self.spec.socket_path} within "
                                      f"{timeout:.0f} s; raise --shard-startup-timeout for slow model loads")
            await asyncio.sleep(SOCKET_POLL_SECONDS)

    async def wait_exit(self) -> int:
        return await self.process.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            logger.warning("shard %d ignored SIGTERM for %.0f s; killing it", self.spec.rank, timeout)
            self.process.kill()
            await self.process.wait()
