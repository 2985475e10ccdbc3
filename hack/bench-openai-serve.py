#!/usr/bin/env python
"""This server vs `transformers serve --continuous-batching`, both driven by the real openai SDK (issue 18).

Measures, on one random Llama built offline (hack/bench-server.py's model and prompts; CPU, float32 in both):
N concurrent streaming chat completions (default 64), greedy (temperature 0), max_tokens O (default 128) with EOS
ignored, `stream_options={"include_usage": True}`; the same prompts and the same chat template in both servers.
EOS: ours gets `ignore_eos: true`; transformers serve has no such parameter, so it gets its own per-request
`generation_config` (a JSON string it documents) with `eos_token_id: -1`, which its continuous batching reads as
"no EOS". Every request must then report usage.completion_tokens == O (checked; a short round is flagged).

Both servers stay up for the whole run; each round runs the workload on both, the order alternating per round so
the machine's load hits both alike. Each round has its own prompts (no prefix-cache hits carried over from an
earlier round in either server; ours' log is checked for cached tokens). KV cache: the same bytes in both
(--kv-cache-memory, default ours' CPU default of 1GiB): ours' --kv-cache-memory, transformers' --cb-num-blocks
(blocks of its 256-token pages); left to itself on CPU, transformers sizes its cache from the free host RAM
(~14 GiB resident here), which a shared machine cannot spare. Per system and round: output tokens/s (usage-counted tokens / wall time),
TTFT p50/p99 (request sent -> first chunk with content), TPOT p50 (per request: first -> last content chunk over
completion_tokens - 1), CPU seconds per output token of the server's processes (/proc: steadier than wall time on
a busy machine), the load average; then per-round ratios ours/transformers (throughput: higher is better; TTFT
p99: lower is better) and their medians, and the peak RSS of each server process over the run.

Usage:  .venv/bin/python hack/bench-openai-serve.py [--requests 64] [--prompt-tokens 128] [--output-tokens 128]
        [--rounds 2] [--launcher-arg=--flag=value] [--transformers-arg=--flag=value]
        [--hidden-size 768 --layers 8 --intermediate-size 2048]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from textgen_server.testing.bench_launcher import launcher_process
from textgen_server.testing.bench_model import add_model_arguments, build_bench_model
from textgen_server.testing.launcher_health import wait_until_healthy

sys.path.insert(0, str(Path(__file__).parent))
bench_server = import_module("bench-server")  # build_prompts, percentile
bench_paths = import_module("bench-paths")  # RssSampler, cpu_seconds, child_pids


@dataclass(frozen=True)
class System:
    """One server as the SDK sees it: base URL, the `model` it expects, the extra body that ignores EOS."""

    name: str
    base_url: str
    model: str
    extra_body: dict[str, Any]
    pids: dict[str, int]  # process name -> pid, for CPU time and RSS


@dataclass(frozen=True)
class Timing:
    sent: float
    first: float
    last: float
    completion_tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class Round:
    wall_s: float
    timings: list[Timing]
    cpu_s: float
    loadavg: str

    @property
    def tokens(self) -> int:
        return sum(t.completion_tokens for t in self.timings)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def ttft(self, q: float) -> float:
        return float(bench_server.percentile([t.first - t.sent for t in self.timings], q))

    def tpot_p50(self) -> float:
        return float(bench_server.percentile([(t.last - t.first) / (t.completion_tokens - 1)
                                              for t in self.timings if t.completion_tokens > 1], 50))


async def one_request(client: AsyncOpenAI, system: System, text: str, tokens: int) -> Timing:
    """One streaming chat completion; times of the first and last content chunk and the usage it reported."""
    sent = time.perf_counter()
    first = last = None
    usage = None
    stream = await client.chat.completions.create(
        model=system.model, messages=[{"role": "user", "content": text}], max_tokens=tokens, temperature=0,
        stream=True, stream_options={"include_usage": True}, extra_body=system.extra_body)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            usage = chunk.usage
    if usage is None or first is None or last is None:
        raise RuntimeError(f"{system.name}: a stream ended without content or usage (usage={usage})")
    return Timing(sent, first, last, usage.completion_tokens, usage.prompt_tokens)


async def run_all(system: System, texts: list[str], tokens: int) -> tuple[float, list[Timing]]:
    async with AsyncOpenAI(base_url=f"{system.base_url}/v1", api_key="unused", max_retries=0,
                           timeout=3600) as client:
        started = time.perf_counter()
        timings = await asyncio.gather(*(one_request(client, system, text, tokens) for text in texts))
        return time.perf_counter() - started, list(timings)


def timed_round(system: System, texts: list[str], tokens: int) -> Round:
    before = sum(bench_paths.cpu_seconds(pid) for pid in system.pids.values())
    wall, timings = asyncio.run(run_all(system, texts, tokens))
    cpu = sum(bench_paths.cpu_seconds(pid) for pid in system.pids.values()) - before
    return Round(wall, timings, cpu, " ".join(Path("/proc/loadavg").read_text().split()[:3]))


def free_port(low: int, high: int) -> int:
    """A free 127.0.0.1 port in [low, high] (the range this benchmark was given, clear of other scripts')."""
    for port in range(low, high + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}; stop what listens there or pass --port-range")


@contextmanager
def transformers_serve(model_dir: Path, extra: list[str], workdir: Path, port: int, kv_bytes: int
                       ) -> Iterator[System]:
    """`transformers serve --continuous-batching` on the model directory (preloaded, offline, CPU, float32), with
    a KV cache of `kv_bytes`."""
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir), "--continuous-batching",
               "--device", "cpu", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
               f"--cb-num-blocks={transformers_num_blocks(model_dir, kv_bytes)}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    log_path = workdir / "openai-serve-transformers.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base_url, 900, log_path.read_text, poll_seconds=0.5)
        # eos_token_id -1: continuous batching's "no EOS" (requests.py keeps only ids >= 0)
        no_eos = json.dumps({"eos_token_id": -1, "do_sample": False})
        yield System("transformers", base_url, str(model_dir), {"generation_config": no_eos},
                     {"transformers": process.pid})
    finally:
        process.terminate()
        process.wait(120)
        print(f"(transformers serve log: {log_path})", file=sys.stderr)


def parse_bytes(text: str) -> int:
    units = {"GiB": 1 << 30, "MiB": 1 << 20}
    for unit, size in units.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * size)
    raise SystemExit(f"--kv-cache-memory {text!r}: give NGiB or NMiB, e.g. 1GiB")


def transformers_num_blocks(model_dir: Path, kv_bytes: int, page_size: int = 256) -> int:
    """transformers' --cb-num-blocks for `kv_bytes` of float32 K and V: a block holds `page_size` tokens of every
    layer (ContinuousBatchingConfig.page_size, default 256)."""
    config = json.loads((model_dir / "config.json").read_text())
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    bytes_per_token = 2 * int(config["num_hidden_layers"]) * int(config["num_key_value_heads"]) * head_dim * 4
    return max(1, kv_bytes // (bytes_per_token * page_size))


@contextmanager
def our_server(model_dir: Path, extra: list[str], workdir: Path, kv_memory: str) -> Iterator[System]:
    extra = [f"--kv-cache-memory={kv_memory}", *extra]
    with launcher_process(model_dir, extra, workdir, "openai-serve-ours") as (base_url, process):
        shards = bench_paths.child_pids(process.pid)
        pids = {"ours router": process.pid, **{f"ours shard{i}": pid for i, pid in enumerate(shards)}}
        yield System("ours", base_url, "bench", {"ignore_eos": True}, pids)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=128, help="tokens of each user message's text")
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    add_model_arguments(parser)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textgen-bench")
    parser.add_argument("--kv-cache-memory", default="1GiB", help="KV cache of each server: NGiB or NMiB")
    parser.add_argument("--port-range", default="41000-41999", help="where transformers serve may listen")
    parser.add_argument("--launcher-arg", action="append", default=[], help="extra launcher flag (repeatable)")
    parser.add_argument("--transformers-arg", action="append", default=[],
                        help="extra `transformers serve` flag (repeatable), e.g. --transformers-arg=--cb-num-blocks=512")
    return parser.parse_args()


def measure(systems: list[System], texts: list[list[str]], tokens: int) -> dict[str, list[Round]]:
    """One round per prompt set; both systems get the round's prompts, the first one alternating."""
    results: dict[str, list[Round]] = {system.name: [] for system in systems}
    for index, prompts in enumerate(texts):
        for system in systems if index % 2 == 0 else systems[::-1]:
            run = timed_round(system, prompts, tokens)
            results[system.name].append(run)
            short = "" if all(t.completion_tokens == tokens for t in run.timings) else " (tokens short!)"
            print(f"round {index + 1} {system.name:12s} {run.tokens_per_s:7.1f} tok/s, TTFT p50/p99 "
                  f"{run.ttft(50):.2f}/{run.ttft(99):.2f} s, TPOT p50 {run.tpot_p50():.3f} s, "
                  f"{1e3 * run.cpu_s / run.tokens:.1f} CPU ms/token, {run.wall_s:.1f} s, prompt tokens "
                  f"{run.timings[0].prompt_tokens}, load {run.loadavg}{short}", flush=True)
    return results


def print_report(results: dict[str, list[Round]], peak_kib: dict[str, int]) -> None:
    print(f"\n{'system':12s} {'tok/s':>7s} {'TTFT p50':>9s} {'TTFT p99':>9s} {'TPOT p50':>9s} {'CPU ms/tok':>10s}"
          "  (medians over rounds)")
    for name, runs in results.items():
        print(f"{name:12s} {statistics.median(r.tokens_per_s for r in runs):7.1f} "
              f"{statistics.median(r.ttft(50) for r in runs):9.2f} {statistics.median(r.ttft(99) for r in runs):9.2f} "
              f"{statistics.median(r.tpot_p50() for r in runs):9.3f} "
              f"{statistics.median(1e3 * r.cpu_s / r.tokens for r in runs):10.1f}")
    ours, theirs = results["ours"], results["transformers"]
    throughput = [o.tokens_per_s / t.tokens_per_s for o, t in zip(ours, theirs)]
    ttft = [o.ttft(99) / t.ttft(99) for o, t in zip(ours, theirs)]
    tpot = [o.tpot_p50() / t.tpot_p50() for o, t in zip(ours, theirs)]
    print(f"ours/transformers per round: throughput {_ratios(throughput)} (goal >= 2), TTFT p99 {_ratios(ttft)} "
          f"(goal < 1), TPOT p50 {_ratios(tpot)}")
    print("peak RSS: " + ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in peak_kib.items()))


def cached_prompt_hits(log_path: Path, template_block: int = 16) -> int:
    """Requests of ours' log (its "request N done: ... cached_tokens=K" lines) that reused more than the first
    KV block: prompts share only the chat template's opening tokens, so more means a stale cache helped."""
    hits = 0
    for line in log_path.read_text().splitlines():
        if " done: " in line and "cached_tokens=" in line:
            hits += int(line.split("cached_tokens=")[1].split()[0]) > template_block
    return hits


def _ratios(values: list[float]) -> str:
    return f"x{statistics.median(values):.2f} [" + ", ".join(f"{v:.2f}" for v in values) + "]"


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    low, high = (int(part) for part in args.port_range.split("-"))
    model_dir = build_bench_model(args, args.workdir)
    # distinct prompts (distinct first tokens) for the warmup and every round: no prefix-cache hits across rounds
    texts = bench_server.build_prompts(model_dir, args.requests * args.rounds + 2, args.prompt_tokens)[0]
    kv_bytes = parse_bytes(args.kv_cache_memory)
    print(f"model: {model_dir}; {args.requests} concurrent streaming chat completions x {args.output_tokens} "
          f"tokens out (user text {args.prompt_tokens} tokens), {args.rounds} rounds, cpus={os.cpu_count()}",
          flush=True)
    with ExitStack() as stack:
        systems = [stack.enter_context(our_server(model_dir, args.launcher_arg, args.workdir, args.kv_cache_memory)),
                   stack.enter_context(transformers_serve(model_dir, args.transformers_arg, args.workdir,
                                                          free_port(low, high), kv_bytes))]
        for system in systems:  # first-request costs (and transformers' lazy CB start) out of the measurement
            asyncio.run(run_all(system, texts[-2:], 4))
        pids = {name: pid for system in systems for name, pid in system.pids.items()}
        rounds = [texts[i * args.requests:(i + 1) * args.requests] for i in range(args.rounds)]
        with bench_paths.RssSampler(pids) as rss:
            results = measure(systems, rounds, args.output_tokens)
    print_report(results, dict(rss.peak_kib))
    hits = cached_prompt_hits(args.workdir / "openai-serve-ours.log")
    print(f"ours: {hits} requests with prefix-cache hits beyond the chat template (expected 0)")


if __name__ == "__main__":
    main()
