"""Tensor-parallel settings of one launch (torch-free, pure): shard count, device, rendezvous address, threads.

`build_parallel_config` applies TGI's rules for --num-shard / --sharded, resolves the device through
`textgen_server.devices`, and refuses, from config.json alone and before any weight loads, a shard count that
does not divide the model's attention heads, KV heads and MLP width.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from textgen_server.devices import DeviceChoice, DeviceError, count_visible, resolve_device


class ParallelConfigError(ValueError):
    """A shard-count, device or rendezvous setting that cannot work; the message says what to do."""


@dataclass(frozen=True)
class ParallelConfig:
    """How many ranks, on which device, meeting where, each with how many CPU threads."""

    num_shard: int
    device: DeviceChoice
    master_addr: str
    master_port: int
    threads_per_rank: int


# One rank on the CPU: what a LauncherConfig built without build_config (tests of other parts) describes.
SINGLE_CPU = ParallelConfig(num_shard=1, device=DeviceChoice("cpu", "cpu", overridden=False),
                            master_addr="localhost", master_port=29500, threads_per_rank=1)


def visible_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_num_shard(num_shard: int | None, sharded: bool | None, device: str, num_visible: int) -> int:
    """TGI's rules: --sharded false with several shards is an error; --sharded true without --num-shard means
    every visible device (on the CPU there is no such count, so --num-shard is required)."""
    if num_shard is not None and num_shard < 1:
        raise ParallelConfigError(f"--num-shard must be at least 1, got {num_shard}")
    if sharded is False and num_shard is not None and num_shard > 1:
        raise ParallelConfigError(f"--sharded false contradicts --num-shard {num_shard}; drop one of them")
    if num_shard is not None:
        if sharded is True and num_shard < 2:
            raise ParallelConfigError(f"--sharded true needs at least 2 shards, got --num-shard {num_shard}")
        return num_shard
    if sharded is not True:
        return 1
    if device == "cpu":
        raise ParallelConfigError("--sharded true without --num-shard means one shard per visible device, which "
                                  "the CPU does not define; set --num-shard N")
    if num_visible < 2:
        raise ParallelConfigError(f"--sharded true found {num_visible} visible {device} device(s); sharding needs "
                                  "at least 2: set --num-shard or expose more devices")
    return num_visible


def head_count_problems(model_config: Mapping[str, Any], num_shard: int) -> list[str]:
    """Why `num_shard` cannot split this model (empty when it can), naming the numbers and the valid counts."""
    heads = _int(model_config, "num_attention_heads")
    kv_heads = _int(model_config, "num_key_value_heads") or heads
    intermediate = _int(model_config, "intermediate_size")
    named = [(n, what) for n, what in ((heads, "attention heads"), (kv_heads, "KV heads"),
                                       (intermediate, "MLP intermediate size")) if n]
    if num_shard == 1 or not named:
        return []
    common = math.gcd(*(n for n, _ in named))
    valid = ", ".join(str(d) for d in range(1, common + 1) if common % d == 0)
    return [f"model has {n} {what}, not divisible by --num-shard {num_shard}; valid shard counts: {valid}"
            for n, what in named if n % num_shard]


def threads_per_rank(num_shard: int, num_cpus: int) -> int:
    """CPU threads each rank's torch may use, so that N ranks do not oversubscribe the machine."""
    return max(1, num_cpus // num_shard)


def build_parallel_config(num_shard: int | None, sharded: bool | None, device: str, master_addr: str,
                          master_port: int, model_config: Mapping[str, Any], environ: Mapping[str, str],
                          num_cpus: int) -> ParallelConfig:
    """Validated parallel settings; raises ParallelConfigError with the first problem."""
    try:
        choice = resolve_device(device, environ)
    except DeviceError as error:
        raise ParallelConfigError(str(error)) from error
    count = resolve_num_shard(num_shard, sharded, choice.actual, count_visible(choice.actual, environ))
    problems = head_count_problems(model_config, count)
    if problems:
        raise ParallelConfigError(problems[0])
    if not 0 < master_port < 65536:
        raise ParallelConfigError(f"--master-port must be between 1 and 65535, got {master_port}")
    if not master_addr:
        raise ParallelConfigError("--master-addr must not be empty (default: localhost)")
    return ParallelConfig(num_shard=count, device=choice, master_addr=master_addr, master_port=master_port,
                          threads_per_rank=threads_per_rank(count, num_cpus))


def _int(model_config: Mapping[str, Any], key: str) -> int | None:
    value = model_config.get(key)
    return value if isinstance(value, int) and value > 0 else None
