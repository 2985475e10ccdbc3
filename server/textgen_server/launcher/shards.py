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
    device: str = "cpu"            # the actual device (devices.resolve_device), never "auto"
    master_addr: str = "localhost"
    master_port: int = 29500
    num_threads: int | None = None  # torch intra-op threads of this rank (None: torch's default)
    join_timeout: float = 600.0     # seconds the ranks wait for each other at the rendezvous
    # Names this launch's keys in the rendezvous store: ranks of another launch that reach the same address (two
    # launchers on one host with the same --master-port) never join this group.
    group_key: str = "textgen"
    speculate: int = 0                  # speculative candidates per step (speculation/config.py decided which)
    medusa_path: Path | None = None     # the Medusa repository whose heads propose them
    speculation_costs: str = "measured"  # --speculation-costs: timed at warmup, or flat
    # --static-shapes: (BATCH_BUCKET_SIZE, PREFILL_BATCH_BUCKET_SIZE, PAD_SEQUENCE_TO_MULTIPLE_OF), WARMUP_ENABLED
    bucket_sizes: tuple[int, int, int] | None = None
    shape_warmup: bool = True
    cuda_memory_fraction: float = 1.0   # --cuda-memory-fraction (cuda, dynamic runner, no --kv-cache-memory)
    cuda_graphs: tuple[int, ...] = ()   # --cuda-graphs (cuda, dynamic runner, one shard)

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
    command += ["--device", spec.device]
    if spec.cuda_memory_fraction != 1.0:
        command += ["--cuda-memory-fraction", str(spec.cuda_memory_fraction)]
    if spec.cuda_graphs:
        command += ["--cuda-graphs", ",".join(map(str, spec.cuda_graphs))]
    if spec.world_size > 1:
        command += ["--master-addr", spec.master_addr, "--master-port", str(spec.master_port),
                    "--join-timeout", str(spec.join_timeout), "--group-key", spec.group_key]
    if spec.num_threads is not None:
        command += ["--num-threads", str(spec.num_threads)]
    if spec.speculate:
        command += ["--speculate", str(spec.speculate)]
    if spec.medusa_path is not None:
        command += ["--medusa-path", str(spec.medusa_path)]
    if spec.speculate and spec.speculation_costs != "measured":
        command += ["--speculation-costs", spec.speculation_costs]
    if spec.bucket_sizes is not None:
        command += ["--static-shapes", ",".join(map(str, spec.bucket_sizes))]
        if not spec.shape_warmup:
            command += ["--no-shape-warmup"]
    return command


def build_shard_environ(spec: ShardSpec, environ: dict[str, str]) -> dict[str, str]:
    """The shard's environment: the launcher's, plus what keeps the ranks' traffic on the loopback interface.

    gloo binds to the address the host name resolves to unless told an interface; in a pod that is the pod IP,
    which is right across nodes but not for ranks that meet on a loopback master address (one pod, one host)."""
    env = dict(environ)
    if spec.world_size > 1 and spec.device == "cpu" and _is_loopback(spec.master_addr):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if spec.num_threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(spec.num_threads))  # OpenMP pools outside torch's own setting
    return env


def _is_loopback(address: str) -> bool:
    return address in ("localhost", "::1") or address.startswith("127.")


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
                                                       env=build_shard_environ(spec, dict(os.environ)),
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
