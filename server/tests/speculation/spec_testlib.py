"""Helpers for the speculation tests: a tiny model that repeats itself, an in-process engine, transformers' oracle.

The models are textgen_server.testing.repetitive_model's (tiny random models that repeat themselves, so n-gram
lookup has something to find), in float64: their weak attention leaves some close logits, and float32 rounding
differences between paged attention and transformers' own could flip them.

`EngineRun` drives the real router engine (Scheduler + BlockManager) and the real shard ModelRunner in one
process, without gRPC: the same objects the server runs, step by step, with staggered arrivals.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textgen_server.models.loading import read_eos_token_ids
from textgen_server.engine import BlockManager, Scheduler, SchedulerConfig, Sequence
from textgen_server.protocol import SamplingParams, WarmupSpec
from textgen_server.shard.runner import ModelRunner
from textgen_server.speculation.adaptive import StepCosts

@dataclass
class Job:
    prompt: list[int]
    max_new_tokens: int
    arrival_step: int = 0                 # the engine step at which the request arrives
    params: SamplingParams = field(default_factory=SamplingParams)
    eos_token_ids: tuple[int, ...] = ()


@dataclass
class RunResult:
    outputs: list[list[int]]
    num_proposed: int                     # candidates sent for verification
    num_accepted: int                     # candidates kept
    num_steps: int
    num_preemptions: int
    cached_tokens: int                    # prefix-cache hits at admission, summed
    finish_reasons: list[str]

    @property
    def num_rejected(self) -> int:
        return self.num_proposed - self.num_accepted


class EngineRun:
    """One runner (model + KV cache) reused across runs; each run gets a fresh scheduler and block manager."""

    def __init__(self, model_dir: Path, speculate: int, medusa_path: Path | None = None,
                 num_blocks: int | None = None, max_prefill_tokens: int = 512, measured_costs: bool = False) -> None:
        """measured_costs False replaces the step costs warmup timed by flat ones (every candidate with a chance of
        acceptance pays, as on a device bound by reading its weights): a tiny model's step is 1-3 ms, and on a
        loaded machine its timings are noise (measured: one shape's minimum 1.3 ms in one warmup, 3.0 in the
        next), which would make the accepted counts these tests assert depend on the load. The measured path and
        the rule itself are tested in test_adaptive.py."""
        self.runner = ModelRunner(model_dir, speculate=speculate, medusa_path=medusa_path)
        memory = None if num_blocks is None else num_blocks * self.runner.loaded.kv_cache_shape().bytes_per_block()
        total = 512 if num_blocks is None else num_blocks * 16  # a small cache: the limits shrink to it
        self.warmup = self.runner.warmup(WarmupSpec(min(total - 1, max_prefill_tokens), total,
                                                    min(total, max_prefill_tokens), kv_cache_memory_bytes=memory))
        measured = self.runner.acceptance.costs
        if measured is not None and not measured_costs:
            self.runner.acceptance.costs = StepCosts({size: (1.0,) * len(costs)
                                                      for size, costs in measured.by_batch.items()})
        self.max_prefill_tokens = max_prefill_tokens

    def run(self, jobs: list[Job], prefix_caching: bool = True) -> RunResult:
        self.runner.clear()
        blocks = BlockManager(self.warmup.num_blocks, self.warmup.block_size, enable_prefix_caching=prefix_caching)
        scheduler = Scheduler(SchedulerConfig(self.max_prefill_tokens, 100_000, block_size=blocks.block_size,
                                              max_waiting_tokens=0), blocks)
        seqs = [Sequence(i + 1, job.prompt, job.max_new_tokens, job.params, job.eos_token_ids)
                for i, job in enumerate(jobs)]
        result = RunResult([], 0, 0, 0, 0, 0, [])
        last_arrival = max(job.arrival_step for job in jobs)
        step_index = 0
        while True:
            for job, seq in zip(jobs, seqs):
                if job.arrival_step == step_index:
                    scheduler.add(seq)
            if scheduler.has_work():
                self._step(scheduler, result)
            elif step_index >= last_arrival:
                break
            step_index += 1
        result.outputs = [seq.output_token_ids for seq in seqs]
        result.finish_reasons = [str(seq.finish_reason) for seq in seqs]
        return result

    def _step(self, scheduler: Scheduler, result: RunResult) -> None:
        step = scheduler.schedule()
        assert step is not None
        self.runner.filter(scheduler.take_finished_request_ids())
        generations = self.runner.step(step.items)
        scheduler.postprocess(step, generations)
        result.num_steps += 1
        result.num_proposed += sum(item.num_speculative for item in step.items)
        result.num_accepted += len(generations) - step.num_sampled
        result.num_preemptions += len(step.preempted_request_ids)
        result.cached_tokens += sum(item.start_pos for item in step.items if item.params is not None)


class Reference:
    """transformers' greedy `generate` in the checkpoint's float64, one model per directory (the oracle)."""

    def __init__(self) -> None:
        self._models: dict[Path, Any] = {}

    def greedy(self, model_dir: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
        from transformers import AutoModelForCausalLM

        if model_dir not in self._models:
            self._models[model_dir] = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
        with torch.no_grad():
            output = self._models[model_dir].generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=0)
        return [int(t) for t in output[0, len(prompt):]]


def eos_ids(model_dir: Path) -> tuple[int, ...]:
    """The EOS ids the server would use (generation_config.json), as transformers' generate stops on them."""
    return tuple(read_eos_token_ids(model_dir, json.loads((model_dir / "config.json").read_text())))


def random_prompts(count: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(10, vocab_size, (length + i,), generator=generator).tolist() for i in range(count)]


def echo_prompts(engine: EngineRun, prompts: list[list[int]], num_echo: int = 24) -> list[list[int]]:
    """Each prompt followed by the model's own first `num_echo` greedy tokens and then their first 3 again.

    The repetitive model's next token depends mostly on the current one, so after the repeated 3 tokens it tends
    to continue as it did the first time, which n-gram lookup proposes: long runs of accepted candidates, with
    rejections wherever attention makes it deviate."""
    outputs = engine.run([Job(prompt, num_echo) for prompt in prompts]).outputs
    return [prompt + output + output[:3] for prompt, output in zip(prompts, outputs)]
