#!/usr/bin/env python
"""Throughput and latency of our server vs transformers, on one random Llama built offline (CPU by default).

Workload: N concurrent requests (default 64), prompts of exactly P tokens (128), O output tokens each (128, EOS
ignored), greedy. Three systems run one after another on the same model and token ids:
  ours       the real `textgen-launcher` process, driven over HTTP streaming (/generate_stream)
  static     transformers `model.generate` on one left-padded batch of all N prompts
  cb         transformers continuous batching, `model.generate_batch` (record_timestamps=True)
  base       with --baseline-tree DIR: the same launcher run on DIR/server's code (an A/B in one run)
  wide       the launcher with --max-batch-prefill-tokens N x P: room to prefill the whole burst in one step, the
             static batch's shape (the burst still arrives over HTTP, so its first step may take only the
             requests already there). Against static it isolates serving overhead from the admission policy:
             with the default (max input + 50) the burst is prefilled 16 at a time, and each request's
             inter-token time includes the later groups' prefill steps, which the static batch runs before
             anyone's first token (server/docs/performance.md)
Reported: output tokens/s, TTFT p50/p99 and TPOT p50 (seconds), then ours/static, ours/cb, wide/static,
base/static and ours/base ratios. With --rounds N the systems run N times, their order rotated each round (a busy machine slows
whatever runs at that moment; compare within a round), and every round is reported.
For --baseline-tree, extract the old code and copy the generated gRPC modules in, e.g.
`git archive <commit> server | tar -x -C /tmp/old && cp -r server/textgen_server/pb /tmp/old/server/textgen_server/`.

Usage:  .venv/bin/python hack/bench-server.py [--requests 64] [--prompt-tokens 128] [--output-tokens 128]
        [--hidden-size 768 --layers 8 --intermediate-size 2048] [--skip static,cb] [--launcher-arg=--flag=value]
        [--baseline-tree DIR] [--rounds N]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


from textgen_server.testing.bench_model import add_model_arguments, build_bench_model
from textgen_server.testing.bench_launcher import launcher_process
from textgen_server.testing.stream_timing import stream_all


@dataclass(frozen=True)
class Result:
    name: str
    wall_s: float
    output_tokens: int
    ttft_s: list[float]
    tpot_s: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s

    def row(self) -> str:
        return (f"{self.name:8s} {self.tokens_per_s:10.1f} {percentile(self.ttft_s, 50):9.3f} "
                f"{percentile(self.ttft_s, 99):9.3f} {percentile(self.tpot_s, 50):9.4f} {self.wall_s:8.1f}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=128)
    add_model_arguments(parser)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textgen-bench")
    parser.add_argument("--skip", default="", help="comma-separated systems to skip: ours,static,cb,wide,base")
    parser.add_argument("--launcher-arg", action="append", default=[], help="extra launcher flag (repeatable)")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="also run the launcher on DIR/server's code (PYTHONPATH), as system 'base'")
    parser.add_argument("--rounds", type=int, default=1, help="run every system N times, order rotated per round")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.baseline_tree is not None and not (args.baseline_tree / "server" / "textgen_server").is_dir():
        parser.error(f"--baseline-tree {args.baseline_tree}: no server/textgen_server there; extract one with "
                     "`git archive <commit> server | tar -x -C DIR` and copy server/textgen_server/pb into it")
    return args


def build_prompts(model_dir: Path, count: int, length: int) -> tuple[list[str], list[list[int]]]:
    """`count` distinct texts whose tokenization (BOS included) is exactly `length` tokens."""
    from transformers import AutoTokenizer

    from textgen_server.testing.corpus import CORPUS_LINES

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    corpus = tokenizer(" ".join(list(CORPUS_LINES) * 40), add_special_tokens=False)["input_ids"]
    texts, ids = [], []
    for index in range(count):
        start = (index * 37) % (len(corpus) - 2 * length)
        for size in range(length, 0, -1):  # shrink the window until decode -> encode gives `length` ids
            text = tokenizer.decode(corpus[start:start + size])
            encoded = tokenizer(text)["input_ids"]
            if len(encoded) <= length:
                break
        while len(encoded) < length:  # top up with a cheap single-token word
            text += " a"
            encoded = tokenizer(text)["input_ids"]
        texts.append(text)
        ids.append(encoded)
    return texts, ids


def run_ours(model_dir: Path, texts: list[str], output_tokens: int, extra: list[str], workdir: Path,
             name: str = "ours", code_tree: Path | None = None) -> Result:
    """The launcher on this checkout's code, or with `code_tree` on that tree's server/ (PYTHONPATH first)."""
    env = None
    if code_tree is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(code_tree.resolve() / "server"), os.environ.get("PYTHONPATH")]))}
    with launcher_process(model_dir, extra, workdir, name, env) as (base_url, _process):
        asyncio.run(stream_all(base_url, texts[:2], 4))  # first-request costs out of the measurement
        started = time.perf_counter()
        timings = asyncio.run(stream_all(base_url, texts, output_tokens))
        wall = time.perf_counter() - started
    return Result(name, wall, sum(len(t) - 1 for t in timings), [t[1] - t[0] for t in timings],
                  [(t[-1] - t[1]) / (len(t) - 2) for t in timings if len(t) > 2])




def run_static(model_dir: Path, ids: list[list[int]], output_tokens: int) -> Result:
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    class StepClock(LogitsProcessor):
        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self.times.append(time.perf_counter())
            return scores

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    width = max(len(p) for p in ids)
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in ids])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    generate = dict(attention_mask=mask, do_sample=False, max_new_tokens=output_tokens, eos_token_id=None,
                    min_new_tokens=output_tokens, pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids[:2], **{**generate, "attention_mask": mask[:2], "max_new_tokens": 2,
                                         "min_new_tokens": 2})
        clock = StepClock()
        started = time.perf_counter()
        output = model.generate(input_ids, logits_processor=LogitsProcessorList([clock]), **generate)
        wall = time.perf_counter() - started
    num_new = output.shape[1] - width
    ttft = clock.times[0] - started
    tpot = (clock.times[-1] - clock.times[0]) / max(1, len(clock.times) - 1)
    return Result("static", wall, num_new * len(ids), [ttft] * len(ids), [tpot] * len(ids))


def run_cb(model_dir: Path, ids: list[list[int]], output_tokens: int) -> Result:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    config = GenerationConfig(max_new_tokens=output_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    with torch.no_grad():
        model.generate_batch(inputs=ids[:2], generation_config=config, max_new_tokens=2)
        started = time.perf_counter()
        outputs = model.generate_batch(inputs=ids, generation_config=config, record_timestamps=True)
        wall = time.perf_counter() - started
    ttft, tpot, total = [], [], 0
    for output in outputs.values():
        stamps: list[float] = output.timestamps or []
        total += len(output.generated_tokens)
        ttft.append(stamps[0] - output.created_time if stamps else wall)
        if len(stamps) > 1:
            tpot.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
    return Result("cb", wall, total, ttft, tpot or [float("nan")])


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    systems = {"ours", "static", "cb", "wide", "base"}
    if skip - systems:
        raise SystemExit(f"--skip {args.skip}: unknown system(s) {sorted(skip - systems)}; the systems are "
                         f"{', '.join(sorted(systems))}")
    model_dir = build_bench_model(args, args.workdir)
    texts, ids = build_prompts(model_dir, args.requests, args.prompt_tokens)
    params = json.loads((model_dir / "config.json").read_text())
    print(f"model: {model_dir} ({params['hidden_size']}x{params['num_hidden_layers']} layers), "
          f"{args.requests} requests x ({args.prompt_tokens} prompt + {args.output_tokens} output) tokens, "
          f"cpus={os.cpu_count()}", flush=True)
    runs = {"ours": lambda: run_ours(model_dir, texts, args.output_tokens, args.launcher_arg, args.workdir),
            "static": lambda: run_static(model_dir, ids, args.output_tokens),
            "cb": lambda: run_cb(model_dir, ids, args.output_tokens),
            "wide": lambda: run_ours(model_dir, texts, args.output_tokens, args.launcher_arg + [
                f"--max-batch-prefill-tokens={args.requests * args.prompt_tokens}"], args.workdir, "wide")}
    if args.baseline_tree is not None:
        runs["base"] = lambda: run_ours(model_dir, texts, args.output_tokens, args.launcher_arg, args.workdir,
                                        "base", args.baseline_tree)
    names = [name for name in runs if name not in skip]
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        results: dict[str, Result] = {}
        for name in order:
            results[name] = runs[name]()
            print(f"{name}: done in {results[name].wall_s:.1f} s (load average {load_average()})", flush=True)
        print(f"\nround {round_index + 1} of {args.rounds}, order {', '.join(order)}")
        print_report(results)


def load_average() -> str:
    """The 1-minute load average (what competed for the cores while the system ran)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def print_report(results: dict[str, Result]) -> None:
    print(f"{'system':8s} {'tok/s':>10s} {'TTFT p50':>9s} {'TTFT p99':>9s} {'TPOT p50':>9s} {'wall s':>8s}")
    for result in results.values():
        print(result.row())
    for mine, other in (("ours", "static"), ("ours", "cb"), ("wide", "static"), ("base", "static"), ("ours", "base")):
        if mine in results and other in results:
            print(ratio_line(results[mine], results[other]))


def ratio_line(mine: Result, other: Result) -> str:
    return (f"{mine.name}/{other.name}: throughput x{mine.tokens_per_s / other.tokens_per_s:.2f}, TTFT p50 "
            f"x{percentile(mine.ttft_s, 50) / percentile(other.ttft_s, 50):.2f}, TTFT p99 "
            f"x{percentile(mine.ttft_s, 99) / percentile(other.ttft_s, 99):.2f} (lower is better), "
            f"TPOT p50 x{percentile(mine.tpot_s, 50) / percentile(other.tpot_s, 50):.2f}")


if __name__ == "__main__":
    main()
