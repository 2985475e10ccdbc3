"""The one place the compute device is chosen (torch-free, so the launcher can use it).

Device names are torch's device types: `cpu`, `cuda` (NVIDIA, NCCL between ranks) and `hpu` (Intel Gaudi, HCCL).
The launcher resolves the user's `--device` (auto|cpu|cuda|hpu) here, before any shard starts:

- `auto` picks cuda if an NVIDIA device is visible, else hpu if a Gaudi device is, else cpu (logged by the
  launcher). Visibility is read torch-free (CUDA_VISIBLE_DEVICES / HABANA_VISIBLE_MODULES, else /dev nodes); the
  shard then checks with torch and exits non-zero with a message when the device is not usable.
- The development override `TEXTGEN_DEVICE_OVERRIDE=cpu` (set by the local node agent on simulated GPU/Gaudi
  nodes) makes any requested device compute on the CPU; the launcher logs a WARNING naming both. It is the only
  way a request for an accelerator ends up on the CPU: there is never a silent fallback.
- `hpu` runs the Gaudi backend (textgen_server/gaudi/: the static-shape paged runner, HPU graphs, HCCL); the
  launcher always gives its shards static shapes there (launcher/static_shapes.py).
"""
from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEVICES = ("cpu", "cuda", "hpu")
DEVICE_CHOICES = ("auto", *DEVICES)
OVERRIDE_ENV = "TEXTGEN_DEVICE_OVERRIDE"
OVERRIDE_CHOICES = ("cpu",)

# torch.distributed backend per device: what the ranks of one model use for their collectives.
DISTRIBUTED_BACKENDS: dict[str, str] = {"cpu": "gloo", "cuda": "nccl", "hpu": "hccl"}

# Torch-free visibility: (environment variable listing visible devices, /dev node pattern).
_VISIBILITY: dict[str, tuple[str, str]] = {
    "cuda": ("CUDA_VISIBLE_DEVICES", r"nvidia\d+"),
    "hpu": ("HABANA_VISIBLE_MODULES", r"accel\d+"),
}
_DEV_DIRS = {"cuda": "/dev", "hpu": "/dev/accel"}


class DeviceError(ValueError):
    """A device request that cannot be honoured; the message says what to do."""


@dataclass(frozen=True)
class DeviceChoice:
    """What was asked for and what the shards compute on."""

    requested: str          # auto | cpu | cuda | hpu, as the user gave it
    actual: str             # cpu | cuda | hpu
    overridden: bool        # TEXTGEN_DEVICE_OVERRIDE replaced the device the request resolved to

    @property
    def backend(self) -> str:
        return DISTRIBUTED_BACKENDS[self.actual]


def count_visible(device: str, environ: Mapping[str, str], dev_dirs: Mapping[str, str] | None = None) -> int:
    """Devices of a type this process may use (torch-free); the CPU counts as one."""
    if device == "cpu":
        return 1
    env_name, pattern = _VISIBILITY[device]
    listed = environ.get(env_name)
    if listed is not None:
        return len([part for part in listed.split(",") if part.strip() and part.strip() != "-1"])
    directory = (dev_dirs or _DEV_DIRS)[device]
    try:
        return len([name for name in os.listdir(directory) if re.fullmatch(pattern, name)])
    except OSError:
        return 0


def resolve_device(requested: str, environ: Mapping[str, str],
                   dev_dirs: Mapping[str, str] | None = None) -> DeviceChoice:
    """--device + TEXTGEN_DEVICE_OVERRIDE -> the device the shards use; raises DeviceError."""
    if requested not in DEVICE_CHOICES:
        raise DeviceError(f"--device {requested!r} is not one of {', '.join(DEVICE_CHOICES)}")
    override = environ.get(OVERRIDE_ENV) or None
    if override is not None and override not in OVERRIDE_CHOICES:
        raise DeviceError(f"{OVERRIDE_ENV}={override!r} is not supported: the only override is 'cpu' (compute on "
                          f"the CPU whatever --device says, for simulated nodes); unset it otherwise")
    wanted = requested
    if requested == "auto":
        wanted = next((d for d in ("cuda", "hpu") if count_visible(d, environ, dev_dirs) > 0), "cpu")
    if override is not None:
        return DeviceChoice(requested=requested, actual=override, overridden=override != wanted)
    return DeviceChoice(requested=requested, actual=wanted, overridden=False)


def describe(choice: DeviceChoice) -> str:
    """The launcher's log line for a choice."""
    if choice.overridden:
        return (f"device {choice.requested} requested (--device {choice.requested}) but {OVERRIDE_ENV}=cpu: "
                f"computing on {choice.actual} (development override for simulated nodes)")
    if choice.requested == "auto":
        return f"device auto: using {choice.actual} (cuda if visible, else hpu, else cpu)"
    return f"device {choice.actual}"


def memory_fraction_problem(fraction: float, device: str, kv_cache_memory_given: bool, static_shapes: bool) -> str:
    """Why --cuda-memory-fraction cannot apply to this launch ("" when it can): it sizes the KV cache of the
    dynamic runner on a CUDA device that no --kv-cache-memory sized already. The launcher and the shard both
    check it, so a fraction is never accepted and then ignored."""
    if not 0.0 < fraction <= 1.0:
        return f"--cuda-memory-fraction {fraction}: give a share of the device in (0, 1], e.g. 0.9"
    if fraction == 1.0:
        return ""
    if device != "cuda":
        return (f"--cuda-memory-fraction {fraction} sizes the KV cache from a CUDA device's free memory, but this "
                f"launch runs on {device}; drop it (--kv-cache-memory sets the KV cache size on every device)")
    if kv_cache_memory_given:
        return (f"--cuda-memory-fraction {fraction} and --kv-cache-memory both size the KV cache; give one of them")
    if static_shapes:
        return (f"--cuda-memory-fraction {fraction}: static shapes size the KV cache from --kv-cache-memory (default "
                "1 GiB) only; drop the fraction or give --kv-cache-memory")
    return ""


class CudaGraphSizesError(argparse.ArgumentTypeError, ValueError):
    """A --cuda-graphs value that is not a list of batch sizes (argparse shows it for the flag; the launcher's
    environment reading catches the ValueError for CUDA_GRAPHS)."""


def parse_cuda_graph_sizes(value: str) -> tuple[int, ...]:
    """--cuda-graphs / CUDA_GRAPHS as TGI takes it: comma-separated batch sizes; "0" (zeros only, or nothing)
    captures none."""
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise CudaGraphSizesError(f"--cuda-graphs {value!r}: expected comma-separated batch sizes such as 1,2,4,8 "
                                  "(0 captures none)") from None
    if any(size < 0 for size in sizes):
        raise CudaGraphSizesError(f"--cuda-graphs {value!r}: batch sizes must be positive (0 captures none)")
    return tuple(sorted({size for size in sizes if size > 0}))


def cuda_graphs_problem(sizes: tuple[int, ...], device: str, static_shapes: bool, world_size: int) -> str:
    """Why --cuda-graphs cannot apply to this launch ("" when it can): graphs replay decode steps of the dynamic
    runner on one CUDA device (shard/cuda_graphs.py). Checked by the launcher and the shard alike."""
    if not sizes:
        return ""
    flag = f"--cuda-graphs {','.join(map(str, sizes))}"
    if device != "cuda":
        return f"{flag}: CUDA graphs are captured on CUDA devices only, and this launch runs on {device}; pass 0"
    if static_shapes:
        return f"{flag}: static shapes (--static-shapes) pad their own buckets and run without CUDA graphs; pass 0"
    if world_size > 1:
        return (f"{flag}: graphs are not captured across tensor-parallel ranks yet (--num-shard {world_size}); "
                "pass 0, or serve with one shard")
    return ""
