"""Prompt logprobs (decoder_input_details) from the ModelRunner equal transformers' log_softmax (float32, CPU).

The runner is driven with hand-built StepItems: a prompt split into several chunks over several steps, next to
another request that does not ask (so the rows of the flattened batch must be picked right), a prompt in one
chunk and a one-token prompt (no values: its only token has no prediction).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from textgen_server.protocol import SamplingParams, StepItem, WarmupSpec
from textgen_server.shard.errors import InvalidStepError
from textgen_server.shard.runner import ModelRunner

BLOCK = 16
TOLERANCE = 1e-4


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(10, 700, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _expected(path: Path, prompt: list[int]) -> list[float]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(torch.tensor([prompt])).logits[0].float(), dim=-1)
    return logprobs[:-1].gather(1, torch.tensor(prompt[1:])[:, None]).squeeze(1).tolist()


def _runner(path: Path) -> ModelRunner:
    runner = ModelRunner(path, dtype="float32")
    runner.warmup(WarmupSpec(max_input_tokens=256, max_total_tokens=512, max_prefill_tokens=256,
                             max_batch_total_tokens=64 * BLOCK))
    return runner


def _chunk_items(request_id: int, prompt: list[int], bounds: list[int], blocks: list[int],
                 want: bool) -> list[StepItem]:
    """The items of a prompt cut at `bounds` (chunk i covers prompt[bounds[i]:bounds[i + 1]])."""
    items = []
    for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
        first = index == 0
        items.append(StepItem(request_id, prompt[start:end], start, blocks, sample=end == len(prompt),
                              params=SamplingParams() if first else None,
                              num_prompt_tokens=len(prompt) if first else 0, prefill_logprobs=want))
    return items


def _assert_close(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    worst = max((abs(a - e) for a, e in zip(actual, expected)), default=0.0)
    assert worst < TOLERANCE, f"largest prompt logprob difference {worst}"


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_chunked_prompt_logprobs_match_transformers(tiny_model_dir, arch: str) -> None:
    path = tiny_model_dir(arch)
    runner = _runner(path)
    asked, other = _prompt(70, seed=1), _prompt(40, seed=2)
    # Three chunks for the request that asks (one cut mid-block, one on a block boundary), two for the other.
    asked_items = _chunk_items(1, asked, [0, 20, 32, 70], list(range(0, 5)), want=True)
    other_items = _chunk_items(2, other, [0, 25, 40], list(range(5, 8)), want=False)
    steps = [[other_items[0], asked_items[0]], [asked_items[1], other_items[1]], [asked_items[2]]]
    generations = [g for items in steps for g in runner.step(items)]
    by_id = {g.request_id: g for g in generations}
    assert by_id[2].prefill_logprobs == []
    _assert_close(by_id[1].prefill_logprobs, _expected(path, asked))
    assert runner.prompt_logprobs == {}  # nothing kept once returned


def test_single_chunk_and_one_token_prompts(tiny_llama_dir) -> None:
    runner = _runner(tiny_llama_dir)
    whole, single = _prompt(33, seed=3), _prompt(1, seed=4)
    items = [*_chunk_items(1, whole, [0, 33], [0, 1, 2], want=True),
             *_chunk_items(2, single, [0, 1], [3], want=True)]
    first, second = runner.step(items)
    _assert_close(first.prefill_logprobs, _expected(tiny_llama_dir, whole))
    assert second.prefill_logprobs == []


def test_a_chunk_without_its_predecessor_is_refused(tiny_llama_dir) -> None:
    runner = _runner(tiny_llama_dir)
    prompt = _prompt(40, seed=5)
    first, second = _chunk_items(1, prompt, [0, 20, 40], [0, 1, 2], want=True)
    runner.step([StepItem(1, prompt[:20], 0, [0, 1, 2], False, SamplingParams(), [], 40)])  # no logprobs asked
    with pytest.raises(InvalidStepError, match="prefill_logprobs at start_pos 20"):
        runner.step([second])
    assert first.prefill_logprobs
