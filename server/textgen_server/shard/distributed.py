"""The shard's device and process group: checked and joined before any weight loads.

- The device (resolved by the launcher in textgen_server.devices, never "auto" here) is checked with torch:
  a device that is not usable is a fatal start error naming the flag and what to do, never a CPU fallback.
- With world_size > 1 the ranks meet at master_addr:master_port (a TCPStore that rank 0 serves), wait for each
  other with the startup timeout (model loads may be slow and uneven), then form one torch.distributed group
  (gloo / nccl / hccl, devices.DISTRIBUTED_BACKENDS) whose collectives time out after COLLECTIVE_TIMEOUT_S: a
  rank that dies or hangs makes the others' next collective fail within seconds, and a rank whose step fails
  exits (shard/servicer.py), so the launcher sees an exit and stops every rank.
"""
from __future__ import annotations

import datetime
import logging
import time

import torch
import torch.distributed as dist

from textgen_server.devices import DISTRIBUTED_BACKENDS

logger = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT_S = 5.0
JOIN_POLL_S = 0.05


class DeviceUnavailableError(RuntimeError):
    """The requested device cannot be used by this process."""


def select_device(device: str, rank: int) -> torch.device:
    """The torch device of this rank (one accelerator per rank on a node); raises DeviceUnavailableError."""
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "device cuda requested (--device cuda) but torch.cuda.is_available() is False: this torch build "
                f"({torch.__version__}) or this machine has no usable NVIDIA GPU; run on a GPU node with the CUDA "
                "image, or pass --device cpu (TEXTGEN_DEVICE_OVERRIDE=cpu on simulated development nodes)")
        if rank >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"rank {rank} needs GPU {rank} but only {torch.cuda.device_count()} are visible; lower --num-shard "
                "or expose more GPUs (CUDA_VISIBLE_DEVICES, the pod's nvidia.com/gpu limit)")
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    raise DeviceUnavailableError(
        f"device {device} is not selected here: hpu ranks get their card from gaudi/backend.py (shard/__main__.py "
        "calls it); use --device cuda, hpu or cpu")


def init_process_group(device: str, rank: int, world_size: int, master_addr: str, master_port: int,
                       join_timeout_s: float, group_key: str = "textgen",
                       collective_timeout_s: float = COLLECTIVE_TIMEOUT_S,
                       probe_device: torch.device | None = None) -> None:
    """Join the ranks' group (no-op for one rank); raises RuntimeError naming the rank and the address.

    `group_key` namespaces the store's keys: a rank of another launch reaching the same address waits for its own
    peers (and its launcher stops it) instead of joining this group. `probe_device` is the rank's device when the
    caller selected it (hpu: gaudi/backend.py), else select_device's."""
    if world_size == 1:
        return
    try:
        server = dist.TCPStore(master_addr, master_port, world_size, is_master=rank == 0,
                               timeout=datetime.timedelta(seconds=join_timeout_s), wait_for_workers=False)
        store = dist.PrefixStore(f"textgen/{group_key}/", server)
        _wait_for_all(store, rank, world_size, join_timeout_s)
    except (RuntimeError, TimeoutError) as error:
        raise RuntimeError(f"rank {rank} of {world_size} could not meet the others at {master_addr}:{master_port} "
                           f"within {join_timeout_s:.0f} s ({error}); check that every rank started and that "
                           "--master-port is free") from error
    dist.init_process_group(DISTRIBUTED_BACKENDS[device], store=store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=collective_timeout_s))
    probe = torch.ones(1, device=probe_device or select_device(device, rank))
    dist.all_reduce(probe)  # connects every pair now (NCCL is lazy), so the first real step is not the first contact
    if int(probe.item()) != world_size:
        raise RuntimeError(f"rank {rank}: the process group's first all-reduce gave {probe.item()}, not {world_size}")
    logger.info("rank %d of %d joined the %s group at %s:%d", rank, world_size, DISTRIBUTED_BACKENDS[device],
                master_addr, master_port)


def _wait_for_all(store: dist.Store, rank: int, world_size: int, timeout_s: float) -> None:
    # A barrier on the store, with the long startup timeout; the group's own timeout is the short collective one.
    store.add("joined", 1)
    deadline = time.monotonic() + timeout_s
    while (joined := store.add("joined", 0)) < world_size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{joined} of {world_size} ranks joined")
        time.sleep(JOIN_POLL_S)


def set_num_threads(num_threads: int | None) -> None:
    """This rank's share of the CPU (launcher/parallel.py), so that N ranks do not oversubscribe the machine."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
