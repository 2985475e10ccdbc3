"""The KV cache sized from a device's free memory (CUDA without --kv-cache-memory, as TGI sizes it).

No CUDA device here: the runner runs on the CPU with a recording stand-in for torch.cuda.mem_get_info, which is
the only device call of this path; the warmup prefill, the arithmetic and the allocation are the real ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from textgen_server.models.kv_cache import BLOCK_SIZE
from textgen_server.protocol import SamplingParams, StepItem, WarmupSpec
from textgen_server.shard.errors import CapacityError
from textgen_server.shard.runner import ModelRunner
from textgen_server.shard.warmup import DEVICE_MEMORY_HEADROOM, kv_bytes_from_free_memory

GIB = 1 << 30
SPEC = WarmupSpec(max_input_tokens=40, max_total_tokens=64, max_prefill_tokens=100)


class Probe:
    """Reports fixed (free, total) bytes and records when it was asked, relative to the runner's steps."""

    def __init__(self, free: int, total: int) -> None:
        self.free, self.total, self.calls = free, total, 0

    def __call__(self) -> tuple[int, int]:
        self.calls += 1
        return self.free, self.total


@pytest.mark.parametrize("free, total, fraction, expected", [
    (10 * GIB, 16 * GIB, 1.0, int(10 * GIB * DEVICE_MEMORY_HEADROOM)),
    (10 * GIB, 16 * GIB, 0.75, int(6 * GIB * DEVICE_MEMORY_HEADROOM)),   # 4 GiB of the device are another's
    (3 * GIB, 16 * GIB, 0.75, 0),                                        # less free than the others' share
])
def test_kv_bytes_from_free_memory(free: int, total: int, fraction: float, expected: int) -> None:
    assert kv_bytes_from_free_memory(free, total, fraction) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.01])
def test_a_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="memory_fraction must be in"):
        kv_bytes_from_free_memory(GIB, GIB, fraction)


def _runner(path: Path, probe: Probe, fraction: float = 1.0) -> ModelRunner:
    return ModelRunner(path, dtype="float32", device_memory=probe, memory_fraction=fraction)


def test_the_cache_takes_the_free_memory_left_after_the_warmup_prefill(tiny_llama_dir: Path) -> None:
    probe = Probe(free=20 << 20, total=64 << 20)
    runner = _runner(tiny_llama_dir, probe, fraction=0.75)
    shape = runner.loaded.kv_cache_shape(BLOCK_SIZE)
    result = runner.warmup(SPEC)
    warm_blocks = 3 + 3 + 2    # prompts of 40, 40 and 20 tokens, each from a block of its own
    budget = kv_bytes_from_free_memory(20 << 20, 64 << 20, 0.75) + warm_blocks * shape.bytes_per_block()
    assert probe.calls == 1
    assert result.num_blocks == shape.num_blocks_for(budget) == runner.cache.num_blocks  # type: ignore[union-attr]
    # The sized cache serves: a prompt in its last blocks.
    last = list(range(result.num_blocks - 2, result.num_blocks))
    generations = runner.step([StepItem(1, list(range(3, 20)), 0, last, True, SamplingParams(), [], 17)])
    assert len(generations) == 1


def test_an_explicit_budget_wins_over_the_free_memory(tiny_llama_dir: Path) -> None:
    probe = Probe(free=GIB, total=2 * GIB)
    runner = _runner(tiny_llama_dir, probe)
    shape = runner.loaded.kv_cache_shape(BLOCK_SIZE)
    result = runner.warmup(WarmupSpec(40, 64, 100, kv_cache_memory_bytes=40 * shape.bytes_per_block()))
    assert (probe.calls, result.num_blocks) == (0, 40)


def test_too_little_free_memory_names_both_flags(tiny_llama_dir: Path) -> None:
    runner = _runner(tiny_llama_dir, Probe(free=0, total=GIB))
    # Nothing free beyond the warmup's own 8 blocks (128 tokens): a 200-token request cannot fit.
    with pytest.raises(CapacityError, match=r"--max-total-tokens 200 does not fit .* --cuda-memory-fraction 1.0"):
        runner.warmup(WarmupSpec(max_input_tokens=40, max_total_tokens=200, max_prefill_tokens=100))
    with pytest.raises(Exception, match="call Warmup"):  # nothing half-allocated is left serving
        runner.step([StepItem(1, [3], 0, [0], True, SamplingParams(), [], 1)])
