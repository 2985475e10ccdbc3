"""The static-shape engine on the CPU: padded, bucketed serving gives transformers' tokens and only warmed shapes.

The real router engine (Scheduler + BlockManager with SchedulerConfig.buckets) drives the real shard
StaticShapeRunner in one process, step by step, with staggered arrivals, chunked prefill and a prefix-cache hit;
every forward pass is padded (shard/static_layout.py) and recorded. Greedy output must equal transformers' own
unpadded `generate`, and every recorded shape must be one that warmup ran.
"""
from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from textgen_server.engine import BlockManager, Scheduler, SchedulerConfig, Sequence
from textgen_server.engine.buckets import BucketConfig, PrefillShape
from textgen_server.protocol import SamplingParams, StepItem, WarmupSpec
from textgen_server.shard.errors import InvalidStepError
from textgen_server.shard.runner import ModelRunner
from textgen_server.shard.static_layout import DUMMY_REQUEST_ID, pad_step
from textgen_server.shard.static_runner import BucketSizes, StaticShapeRunner, bucket_config

SPEC = WarmupSpec(max_input_tokens=160, max_total_tokens=200, max_prefill_tokens=320, max_batch_size=12)
SIZES = BucketSizes(batch=4, prefill_batch=2, pad_sequence=32)

# (prompt length, max new tokens, arrival step)
WORKLOAD = [(150, 6, 0), (3, 12, 0), (40, 9, 1), (1, 5, 1), (97, 7, 2), (33, 10, 2), (64, 4, 3), (160, 3, 3),
            (12, 11, 5), (70, 8, 6), (129, 5, 6), (31, 6, 8), (2, 9, 9), (88, 7, 12),
            # a burst of short prompts arriving together: one prefill group of several rows in bucket 32
            (20, 5, 16), (25, 6, 16), (11, 4, 16), (30, 5, 16), (17, 7, 16)]


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(10, 700, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _jobs() -> list[tuple[list[int], int, int]]:
    jobs = [(_prompt(n, seed=i), new, step) for i, (n, new, step) in enumerate(WORKLOAD)]
    jobs.append((jobs[0][0][:64] + _prompt(30, seed=99), 6, 14))   # reuses the first prompt's 4 full blocks
    return jobs


def serve(runner: ModelRunner, warmup: Any, buckets: BucketConfig | None,
          jobs: list[tuple[list[int], int, int]]) -> tuple[list[list[int]], int]:
    """The jobs through the real scheduler and runner; each job's tokens and the prefix-cache hit tokens."""
    runner.clear()
    blocks = BlockManager(warmup.num_blocks, warmup.block_size, enable_prefix_caching=True)
    scheduler = Scheduler(SchedulerConfig(SPEC.max_prefill_tokens, 100_000, block_size=blocks.block_size,
                                          max_batch_size=SPEC.max_batch_size, max_waiting_tokens=0,
                                          buckets=buckets), blocks)
    seqs = [Sequence(i + 1, prompt, new) for i, (prompt, new, _) in enumerate(jobs)]
    cached, step_index = 0, 0
    while step_index <= max(job[2] for job in jobs) or scheduler.has_work():
        for (_, _, arrival), seq in zip(jobs, seqs):
            if arrival == step_index:
                scheduler.add(seq)
        step = scheduler.schedule()
        if step is not None:
            runner.filter(scheduler.take_finished_request_ids())
            scheduler.postprocess(step, runner.step(step.items))
            cached += sum(item.start_pos for item in step.items if item.params is not None)
        step_index += 1
    return [seq.output_token_ids for seq in seqs], cached


@lru_cache(maxsize=None)
def _reference_model(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _reference(path: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
    with torch.inference_mode():
        out = _reference_model(path).generate(
            torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
            pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return [int(t) for t in out[0, len(prompt):]]


@pytest.fixture(scope="module")
def static_runner(tiny_model_dir: Any) -> tuple[StaticShapeRunner, Any]:
    runner = StaticShapeRunner(tiny_model_dir("llama"), dtype="float32", buckets=SIZES)
    return runner, runner.warmup(SPEC)


def test_padded_bucketed_serving_matches_generate_and_stays_in_the_warmed_shapes(
        static_runner: tuple[StaticShapeRunner, Any], tiny_model_dir: Any) -> None:
    runner, warmup = static_runner
    assert runner.config is not None
    outputs, cached = serve(runner, warmup, runner.config, _jobs())
    for (prompt, new, _), output in zip(_jobs(), outputs):
        assert output == _reference(tiny_model_dir("llama"), prompt, new), f"prompt of {len(prompt)} tokens"
    assert cached >= 64                                        # the prefix-cache hit really happened
    assert runner.unwarmed_shapes() == []
    seen = {shape for pair in runner.shapes_seen for shape in pair if shape is not None}
    assert len(seen) >= 5 and any(isinstance(s, PrefillShape) and s.batch > 2 for s in seen)
    assert runner.num_padded_tokens > runner.num_real_tokens   # padding did happen


def test_warmup_ran_every_enumerated_shape_and_kept_a_scratch_block(
        static_runner: tuple[StaticShapeRunner, Any]) -> None:
    runner, warmup = static_runner
    # 12 prefill shapes (batch 2-10 x 32, 2-6 x 64, 2-4 x 96, 2 x 128, 2 x 160) + decode batches 4, 8, 12
    assert len(runner.warmed_shapes) == 15
    assert runner.scratch_block == warmup.num_blocks          # one past the router's last block
    assert runner.shape_warmup_seconds > 0


def test_a_step_outside_the_shapes_is_refused(static_runner: tuple[StaticShapeRunner, Any]) -> None:
    # Three 100-token prompts in one step: bucket 128 holds 2 (320 // 128). The bucket-aware scheduler never
    # sends this; the runner refuses it rather than run (on Gaudi: compile) a shape warmup did not.
    runner, _ = static_runner
    items = [StepItem(i, _prompt(100, i), 0, list(range(7 * i, 7 * i + 7)), True, SamplingParams(),
                      num_prompt_tokens=100) for i in range(3)]
    with pytest.raises(InvalidStepError, match="outside the static shapes"):
        runner.step(items)
    runner.clear()


def test_pad_step_layout() -> None:
    config = bucket_config(SIZES, SPEC, 16)
    items = [StepItem(1, [5], 40, [0, 1, 2], True), StepItem(2, [7, 8, 9], 0, [3], True),
             StepItem(3, [4] * 40, 0, [4, 5, 6], True)]
    padded = pad_step(items, config, scratch_block=99, block_size=16)
    assert padded.prefill == PrefillShape(2, 64) and padded.decode is not None and padded.decode.batch == 4
    assert [len(item.token_ids) for item in padded.items] == [64, 64, 1, 1, 1, 1]   # prefill rows, then decode
    assert padded.real_rows == [128, 0, 1, 2, *range(64, 104)]
    assert padded.items[0].block_ids == [3, 99, 99, 99]        # padding past the prompt's blocks: scratch
    assert all(len(item.block_ids) == config.num_context_blocks for item in padded.items[2:])
    assert [item.request_id for item in padded.items[3:]] == [DUMMY_REQUEST_ID] * 3


def test_throughput_static_against_dynamic(static_runner: tuple[StaticShapeRunner, Any], tiny_model_dir: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Prints tokens/s of both engines on the same workload (the docs' figure); both must give the same tokens."""
    runner, warmup = static_runner
    dynamic = ModelRunner(tiny_model_dir("llama"), dtype="float32")
    dynamic_warmup = dynamic.warmup(SPEC)
    rates, outputs = {}, {}
    for name, engine, warm, buckets in (("static", runner, warmup, runner.config),
                                        ("dynamic", dynamic, dynamic_warmup, None)):
        started = time.perf_counter()
        outputs[name], _ = serve(engine, warm, buckets, _jobs())
        rates[name] = sum(len(o) for o in outputs[name]) / (time.perf_counter() - started)
    assert outputs["static"] == outputs["dynamic"]
    with capsys.disabled():
        print(f"\nstatic-shape engine {rates['static']:.1f} tokens/s, dynamic {rates['dynamic']:.1f} tokens/s "
              f"({rates['static'] / rates['dynamic']:.2f}x); padded/real tokens so far "
              f"{runner.num_padded_tokens}/{runner.num_real_tokens}; shape warmup {len(runner.warmed_shapes)} "
              f"shapes in {runner.shape_warmup_seconds:.2f} s")
