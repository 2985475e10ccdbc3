#!/usr/bin/env python
"""Tensor parallelism: the same workload through `textgen-launcher --num-shard N` for N = 1, 2, 4, in one run.

Model: the server benchmark's random Llama (hidden 768, 8 layers, GQA 12/4, intermediate 2048, ~51M parameters,
float32), built offline. Workload per N: R concurrent streams (default 32), prompts of P tokens (128), O output
tokens each (64, EOS ignored), greedy, after two warm-up requests. Reported per N: output tokens/s, TTFT p50/p99,
the resident memory (VmRSS) and peak (VmHWM) of every rank after the run, and each as a ratio to N=1.

On a CPU the ranks share the cores (each gets cpu_count // N torch threads), so N > 1 trades compute for
collectives and is not expected to be faster; it is the per-rank memory that shrinks. On a GPU machine with N
GPUs, `--device cuda` runs the same script over NCCL (one GPU per rank).

Usage: .venv/bin/python hack/bench-tp.py [--shards 1,2,4] [--device cpu|cuda] [--requests 32] [--prompt-tokens 128]
       [--output-tokens 64] [--hidden-size 768 --layers 8 --intermediate-size 2048 --heads 12 --kv-heads 4]
       [--kv-cache-memory 256MiB] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


from textgen_server.testing.bench_model import add_model_arguments, build_bench_model
from textgen_server.testing.bench_launcher import free_port, launcher_process
from textgen_server.testing.stream_timing import stream_all


@dataclass(frozen=True)
class Run:
    num_shard: int
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    rank_rss_mb: list[float]
    rank_hwm_mb: list[float]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="1,2,4", help="comma list of --num-shard values; the first is the base")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    add_model_arguments(parser)
    parser.add_argument("--kv-cache-memory", default="256MiB", help="per rank")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textgen-bench-tp")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def build_prompts(model_dir: Path, count: int, length: int) -> list[str]:
    """`count` distinct texts of about `length` tokens."""
    from transformers import AutoTokenizer

    from textgen_server.testing.corpus import CORPUS_LINES

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    corpus = tokenizer(" ".join(list(CORPUS_LINES) * 40), add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(corpus[(i * 37) % (len(corpus) - 2 * length):][:length - 1]) for i in range(count)]


def rank_memory_mb(launcher_pid: int) -> tuple[list[float], list[float]]:
    """VmRSS and VmHWM (MB) of the launcher's children (the ranks), in rank (pid) order."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    rss, hwm = [], []
    for pid in sorted(int(p) for p in children):
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        rss.append(int(fields["VmRSS"].split()[0]) / 1024)
        hwm.append(int(fields["VmHWM"].split()[0]) / 1024)
    return rss, hwm


def run_one(args: argparse.Namespace, model_dir: Path, prompts: list[str], num_shard: int) -> Run:
    extra = ["--num-shard", str(num_shard), "--master-port", str(free_port()), "--device", args.device,
             "--kv-cache-memory", args.kv_cache_memory]
    with launcher_process(model_dir, extra, args.workdir, name=f"launcher-n{num_shard}") as (base_url, process):
        asyncio.run(stream_all(base_url, prompts[:2], 4))  # first-request costs out of the measurement
        started = time.perf_counter()
        timings = asyncio.run(stream_all(base_url, prompts, args.output_tokens))
        wall = time.perf_counter() - started
        rss, hwm = rank_memory_mb(process.pid)
    ttft = sorted(t[1] - t[0] for t in timings)
    return Run(num_shard, sum(len(t) - 1 for t in timings) / wall, statistics.median(ttft),
               ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))], rss, hwm)


def print_report(runs: list[Run]) -> None:
    base = runs[0]
    print(f"{'N':>2} {'tokens/s':>9} {'x N=1':>6} {'TTFT p50':>9} {'x N=1':>6} {'TTFT p99':>9} {'x N=1':>6} "
          f"{'rank RSS MB (max)':>18} {'x N=1':>6} {'rank peak MB (max)':>19} {'x N=1':>6}")
    for run in runs:
        print(f"{run.num_shard:>2} {run.tokens_per_s:9.1f} {run.tokens_per_s / base.tokens_per_s:6.2f} "
              f"{run.ttft_p50_s:9.3f} {run.ttft_p50_s / base.ttft_p50_s:6.2f} {run.ttft_p99_s:9.3f} "
              f"{run.ttft_p99_s / base.ttft_p99_s:6.2f} {max(run.rank_rss_mb):18.0f} "
              f"{max(run.rank_rss_mb) / max(base.rank_rss_mb):6.2f} {max(run.rank_hwm_mb):19.0f} "
              f"{max(run.rank_hwm_mb) / max(base.rank_hwm_mb):6.2f}")


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = build_bench_model(args, args.workdir)
    prompts = build_prompts(model_dir, args.requests, args.prompt_tokens)
    runs = []
    for num_shard in [int(n) for n in args.shards.split(",")]:
        runs.append(run_one(args, model_dir, prompts, num_shard))
        print(f"N={num_shard}: {asdict(runs[-1])}", file=sys.stderr, flush=True)
    print_report(runs)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(run) for run in runs], indent=2))


if __name__ == "__main__":
    main()
