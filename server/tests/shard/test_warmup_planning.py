"""KV cache sizing and warmup prefill shape (pure functions), table-driven."""
from __future__ import annotations

import pytest
import torch

from textgen_server.models.kv_cache import KVCacheShape
from textgen_server.protocol import WarmupSpec
from textgen_server.shard.errors import CapacityError
from textgen_server.shard.warmup import (
    DEFAULT_CPU_KV_CACHE_BYTES,
    default_kv_cache_bytes,
    plan_num_blocks,
    plan_warmup_prompts,
)

# 2 layers * 2 (k, v) * 16 tokens * 2 heads * 16 dims * 4 bytes = 8 KiB per block
SHAPE = KVCacheShape(num_layers=2, num_kv_heads=2, head_dim=16, block_size=16, dtype=torch.float32)
MIB = 1 << 20


def _spec(**kw) -> WarmupSpec:
    return WarmupSpec(**{"max_input_tokens": 100, "max_total_tokens": 200, "max_prefill_tokens": 300, **kw})


@pytest.mark.parametrize(
    ("spec", "default_bytes", "expected"),
    [
        (_spec(), MIB, 128),                                          # 1 MiB / 8 KiB
        (_spec(kv_cache_memory_bytes=2 * MIB), MIB, 256),             # the request's budget wins
        (_spec(max_batch_total_tokens=1000), MIB, 63),                # just enough blocks for 1000 tokens
    ],
)
def test_plan_num_blocks(spec: WarmupSpec, default_bytes: int, expected: int) -> None:
    assert SHAPE.bytes_per_block() == 8192
    assert plan_num_blocks(spec, SHAPE, default_bytes) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(max_batch_total_tokens=5000), "--max-batch-total-tokens 5000 needs 313 KV blocks"),
        (_spec(max_total_tokens=3000), "--max-total-tokens 3000 does not fit.*128 blocks.*2048 tokens"),
        (_spec(max_prefill_tokens=4096), "--max-batch-prefill-tokens 4096.*raise --kv-cache-memory"),
    ],
)
def test_plan_num_blocks_errors_are_actionable(spec: WarmupSpec, message: str) -> None:
    with pytest.raises(CapacityError, match=message):
        plan_num_blocks(spec, SHAPE, MIB)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (_spec(), [100, 100, 100]),
        (_spec(max_prefill_tokens=250), [100, 100, 50]),
        (_spec(max_prefill_tokens=250, max_batch_size=2), [100, 100]),
        (_spec(max_prefill_tokens=40), [40]),
    ],
)
def test_plan_warmup_prompts(spec: WarmupSpec, expected: list[int]) -> None:
    assert plan_warmup_prompts(spec) == expected


@pytest.mark.parametrize(("device_type", "world_size", "expected"), [
    ("cpu", 1, DEFAULT_CPU_KV_CACHE_BYTES),
    ("cpu", 2, DEFAULT_CPU_KV_CACHE_BYTES // 2),      # ranks share host memory: the pod's 1 GiB is split
    ("cpu", 8, DEFAULT_CPU_KV_CACHE_BYTES // 8),
    ("cuda", 8, DEFAULT_CPU_KV_CACHE_BYTES),          # a device per rank: each keeps the whole default
])
def test_default_kv_budget_is_per_pod_on_cpu_and_per_device_elsewhere(device_type: str, world_size: int,
                                                                       expected: int) -> None:
    assert default_kv_cache_bytes(device_type, world_size) == expected
