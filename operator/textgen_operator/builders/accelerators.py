"""What each accelerator type adds to a pod: a registry, not an if/elif chain."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textgen_operator.spec import TGSSpec

EnvList = list[dict[str, Any]]

# TGI-on-Gaudi environment names for spec.gaudi fields (same meaning and defaults as TGI on Gaudi).
GAUDI_ENV = {
    "batchBucketSize": "BATCH_BUCKET_SIZE",
    "prefillBatchBucketSize": "PREFILL_BATCH_BUCKET_SIZE",
    "padSequenceToMultipleOf": "PAD_SEQUENCE_TO_MULTIPLE_OF",
    "hpuGraphs": "ENABLE_HPU_GRAPH",
    "limitHpuGraphs": "LIMIT_HPU_GRAPH",
    "flashAttention": "USE_FLASH_ATTENTION",
    "flashAttentionRecompute": "FLASH_ATTENTION_RECOMPUTE",
    "warmup": "WARMUP_ENABLED",
    "queueThresholdMs": "QUEUE_THRESHOLD_MS",
    "quantConfig": "QUANT_CONFIG",
}
# Hugepages per Gaudi card: the Habana runtime maps host buffers for DMA from 2 MiB pages.
GAUDI_HUGEPAGES_GIB_PER_CARD = 1


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def gaudi_env(spec: TGSSpec) -> EnvList:
    """Gaudi environment: the knobs from spec.gaudi, plus what multi-card collectives need."""
    # Open MPI's shared-memory transport cannot use CMA inside an unprivileged container.
    env: EnvList = [{"name": "OMPI_MCA_btl_vader_single_copy_mechanism", "value": "none"}]
    if spec.accelerator.count > 1:
        env.append({"name": "PT_HPU_ENABLE_LAZY_COLLECTIVES", "value": "true"})
    env += [{"name": GAUDI_ENV[k], "value": _env_value(spec.gaudi[k])} for k in GAUDI_ENV if k in spec.gaudi]
    return env


def nvidia_env(spec: TGSSpec) -> EnvList:
    """NVIDIA environment. Devices come from the device plugin (never CUDA_VISIBLE_DEVICES here).

    Sharded pods talk over NCCL through /dev/shm (mounted by the builder); pods have no InfiniBand, so NCCL must
    not wait for it.
    """
    if spec.accelerator.count > 1:
        return [{"name": "NCCL_IB_DISABLE", "value": "1"}]
    return []


def no_env(spec: TGSSpec) -> EnvList:
    return []


@dataclass(frozen=True)
class AcceleratorProfile:
    """How one accelerator type shows up in a pod."""

    device: str                         # the launcher's --device: the torch device type the shards run on
    resource: str | None                # extended resource requested per device; None for cpu
    taint_key: str | None               # the taint accelerator nodes carry; tolerated automatically
    capabilities: tuple[str, ...]       # added back after dropping ALL
    env: Callable[[TGSSpec], EnvList]
    hugepages_gib_per_device: int = 0


ACCELERATORS: dict[str, AcceleratorProfile] = {
    "nvidia": AcceleratorProfile("cuda", "nvidia.com/gpu", "nvidia.com/gpu", (), nvidia_env),
    # No SYS_NICE, although Habana's examples add it (--cap-add=sys_nice; their Kubernetes Jobs run as root): the
    # server runs as uid 1000 with allowPrivilegeEscalation false, and for a non-root process an added capability
    # reaches only the bounding set (Kubernetes sets no ambient capabilities, and no_new_privs blocks file
    # capabilities), so it could never take effect; it only made Pod Security `baseline`/`restricted` refuse the
    # pod. Whatever the Habana runtime would do with it (thread priorities, NUMA binding) it does without.
    "gaudi": AcceleratorProfile("hpu", "habana.ai/gaudi", "habana.ai/gaudi", (), gaudi_env,
                                GAUDI_HUGEPAGES_GIB_PER_CARD),
    "cpu": AcceleratorProfile("cpu", None, None, (), no_env),
}


def profile_for(spec: TGSSpec) -> AcceleratorProfile:
    """The profile of spec.accelerator.type (the CRD's enum guarantees one exists)."""
    kind = spec.accelerator.type
    if kind not in ACCELERATORS:
        raise ValueError(f"spec.accelerator.type {kind!r} is not one of {sorted(ACCELERATORS)}")
    return ACCELERATORS[kind]
