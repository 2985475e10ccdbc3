"""Greedy through the ModelRunner equals transformers' own generate, token for token (float32, CPU).

The runner is driven with hand-built StepItems (textgen_server.testing.runner_driver): many requests of mixed
prompt lengths in one ragged batch, joining at different steps, prompts split into chunks, a request reusing
another's cached prefix blocks, and a request preempted and recomputed from position 0 in fresh blocks.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from textgen_server.protocol import WarmupSpec
from textgen_server.shard.runner import ModelRunner
from textgen_server.testing.runner_driver import BLOCK_SIZE, Driver, DriverRequest

ARCHS = ["llama", "mistral", "qwen2"]
PROMPT_LENGTHS = [1, 2, 15, 16, 17, 33, 64, 100, 171, 300]
NUM_BLOCKS = 256


def _prompt(length: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(10, 700, (length,), generator=generator).tolist()


@lru_cache(maxsize=None)
def _reference_model(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _reference(path: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
    model = _reference_model(path)
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
            pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    return out[0, len(prompt) :].tolist()


def _runner(path: Path) -> ModelRunner:
    runner = ModelRunner(path, dtype="float32")
    spec = WarmupSpec(max_input_tokens=512, max_total_tokens=1024, max_prefill_tokens=1024,
                      max_batch_total_tokens=NUM_BLOCKS * BLOCK_SIZE)
    assert runner.warmup(spec).num_blocks == NUM_BLOCKS
    return runner


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_with_chunked_prefill_matches_generate(tiny_model_dir, arch: str) -> None:
    path = tiny_model_dir(arch)
    driver = Driver(_runner(path), NUM_BLOCKS, chunk_budget=96)  # 96 < 300: long prompts span several steps
    requests = [DriverRequest(i, _prompt(n, seed=i), max_new_tokens=4 + (i * 3) % 13) for i, n in enumerate(PROMPT_LENGTHS)]
    # Staggered arrivals: a new request joins every step while others decode, so the batch grows and shrinks.
    for request in requests:
        driver.admit(request)
        driver.step()
    results = driver.run()
    for request in requests:
        expected = _reference(path, request.prompt, request.max_new_tokens)
        assert results[request.request_id] == expected, f"request {request.request_id} ({len(request.prompt)} tokens)"


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_cache_hit_and_recompute_match_generate(tiny_model_dir, arch: str) -> None:
    path = tiny_model_dir(arch)
    driver = Driver(_runner(path), NUM_BLOCKS)
    shared = _prompt(70, seed=100)
    first = DriverRequest(1, shared, max_new_tokens=5)
    driver.admit(first)
    driver.run()
    # Same first 64 tokens (4 full blocks): reuse first's blocks, compute from position 64 on.
    second = DriverRequest(2, shared[:64] + _prompt(40, seed=101), max_new_tokens=12)
    driver.admit(second, shared_blocks=first.block_ids[:4])
    # A request preempted mid-decode, its blocks overwritten by another request, then recomputed from 0.
    third = DriverRequest(3, _prompt(50, seed=102), max_new_tokens=15)
    driver.admit(third)
    for _ in range(6):
        driver.step()
    assert 0 < len(third.generated) < third.max_new_tokens
    driver.preempt(3)
    filler = DriverRequest(4, _prompt(90, seed=103), max_new_tokens=3)
    driver.admit(filler)
    driver.step()
    driver.admit(third)
    results = driver.run()
    assert second.prefix_len == 64
    for request in (first, second, third, filler):
        assert results[request.request_id] == _reference(path, request.prompt, request.max_new_tokens)
