#!/usr/bin/env python3
"""Time per output token with grammar-constrained requests against unconstrained ones, at batch 1 and 32, in one run.

Builds (once, cached under --workdir) a random-weight Llama of the server benchmarks' shape (51M parameters
without embeddings) with a realistic 32k byte-level BPE vocabulary trained offline on the Python standard
library's sources, then drives the shard's own ModelRunner step by step (no HTTP, so the difference is the grammar
work alone): the same prompts and seeds, sampling at temperature 1, every request constrained (JSON Schema of a
list of records that does not complete within the run) or none. Prints ms per output token (per sequence step),
the constrained/unconstrained ratio per batch size, and the share of the mask (fill + apply) in a step.
Goal (issue 17): ratio <= 1.15 at batch 32.

    .venv/bin/python hack/bench-grammar.py [--steps 48] [--batch-sizes 1,32]
"""
from __future__ import annotations

import argparse
import glob
import sys
import sysconfig
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from textgen_server.grammar.compile import GrammarCompiler, build_ll_tokenizer, hf_tokenizer_json
from textgen_server.protocol import SamplingParams, WarmupSpec
from textgen_server.sampling import grammar as grammar_masks
from textgen_server.shard.runner import ModelRunner
from textgen_server.testing.runner_driver import Driver, DriverRequest

SCHEMA = {"type": "object", "properties": {"records": {"type": "array", "items": {
    "type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                     "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                     "score": {"type": "number"}, "tags": {"type": "array", "items": {
                                         "enum": ["red", "green", "blue"]}},
                                     "ok": {"type": "boolean"}},
    "required": ["name", "age", "score", "tags", "ok"], "additionalProperties": False}}},
    "required": ["records"], "additionalProperties": False}


def build_model(workdir: Path, vocab_size: int) -> Path:
    path = workdir / f"llama-h768-l8-v{vocab_size}"
    if (path / "model.safetensors").exists():
        return path
    sources = sorted(glob.glob(str(Path(sysconfig.get_paths()["stdlib"]) / "*.py")))[:400]
    texts = [Path(f).read_text(encoding="utf-8", errors="replace") for f in sources]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(hf), hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                         num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048,
                         bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    hf.save_pretrained(path)
    return path


class MaskTimer:
    """Wraps sampling.grammar.apply_grammar_masks to add up the time spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.original = grammar_masks.apply_grammar_masks

    def __enter__(self) -> "MaskTimer":
        import textgen_server.sampling.sampler as sampler

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        sampler.apply_grammar_masks = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        import textgen_server.sampling.sampler as sampler
        sampler.apply_grammar_masks = self.original  # type: ignore[assignment]


def run(runner: ModelRunner, prompt: list[int], batch: int, steps: int, grammar: str) -> tuple[float, float]:
    """(seconds per decode step, seconds of mask work per step) over `steps` decode steps after the prefill."""
    driver = Driver(runner, runner.cache.num_blocks if runner.cache else 0)
    for i in range(batch):
        driver.admit(DriverRequest(i, prompt, steps + 1, SamplingParams(do_sample=True, seed=i, grammar=grammar)))
    driver.step()  # prefill (and the first token): not a decode step
    with MaskTimer() as timer:
        started = time.perf_counter()
        for _ in range(steps):
            driver.step()
        elapsed = time.perf_counter() - started
    runner.filter(list(range(batch)))
    return elapsed / steps, timer.seconds / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/textgen-bench-grammar"))
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (the machine is shared)")
    args = parser.parse_args()
    path = build_model(args.workdir, args.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(path)
    runner = ModelRunner(path)
    runner.warmup(WarmupSpec(256, 512, 512, kv_cache_memory_bytes=512 << 20))
    compiler = GrammarCompiler(build_ll_tokenizer(hf_tokenizer_json(tokenizer), runner.loaded.config.vocab_size,
                                                  runner.loaded.eos_token_ids))
    grammar = compiler.compile({"type": "json", "value": SCHEMA})
    prompt = tokenizer("def parse(records):\n    return")["input_ids"]
    print(f"model: {path.name}, vocab {runner.loaded.config.vocab_size}, torch threads {torch.get_num_threads()}")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        free, constrained, mask = [], [], []
        for _ in range(args.rounds):
            free.append(run(runner, prompt, batch, args.steps, "")[0])
            step, mask_step = run(runner, prompt, batch, args.steps, grammar)
            constrained.append(step)
            mask.append(mask_step)
        f, c, m = sum(free) / len(free), sum(constrained) / len(constrained), sum(mask) / len(mask)
        print(f"batch {batch:2d}: unconstrained {f * 1e3:7.2f} ms/token, constrained {c * 1e3:7.2f} ms/token, "
              f"ratio {c / f:.3f}x (mask {m * 1e3:.2f} ms/step = {m / c:.1%} of a constrained step; "
              f"per-round ratios {', '.join(f'{cc / ff:.3f}' for cc, ff in zip(constrained, free))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
