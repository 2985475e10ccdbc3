"""Seeded sampling through the ModelRunner: same tokens alone, in a busy batch, and after recompute."""
from __future__ import annotations

from pathlib import Path

import torch

from textgen_server.protocol import SamplingParams, WarmupSpec
from textgen_server.shard.runner import ModelRunner
from textgen_server.testing.runner_driver import BLOCK_SIZE, Driver, DriverRequest

NUM_BLOCKS = 128
PARAMS = SamplingParams(do_sample=True, seed=42, temperature=1.3, top_k=50, top_p=0.95, repetition_penalty=1.1)


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(10, 700, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _driver(path: Path) -> Driver:
    runner = ModelRunner(path, dtype="float32")
    runner.warmup(WarmupSpec(64, 512, 512, max_batch_total_tokens=NUM_BLOCKS * BLOCK_SIZE))
    return Driver(runner, NUM_BLOCKS, chunk_budget=64)


def test_seeded_sampling_alone_busy_and_recomputed(tiny_llama_dir: Path) -> None:
    prompt = _prompt(40, seed=1)
    alone = _driver(tiny_llama_dir)
    alone.admit(DriverRequest(0, prompt, 20, PARAMS))
    expected = alone.run()[0]

    busy = _driver(tiny_llama_dir)
    for i in range(1, 6):
        busy.admit(DriverRequest(i, _prompt(10 * i, seed=i + 10), 25, SamplingParams(do_sample=True, seed=i)))
        busy.step()
    target = DriverRequest(0, prompt, 20, PARAMS)
    busy.admit(target)
    for _ in range(8):
        busy.step()
    busy.preempt(0)  # recompute from position 0, with 7 tokens already generated
    busy.step()
    busy.admit(target)
    assert busy.run()[0] == expected
    # A different seed gives different text (the seed is really used).
    other = _driver(tiny_llama_dir)
    other.admit(DriverRequest(0, prompt, 20, SamplingParams(**{**PARAMS.__dict__, "seed": 43})))
    assert other.run()[0] != expected
