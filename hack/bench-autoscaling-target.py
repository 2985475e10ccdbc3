#!/usr/bin/env python
"""What queue depth per pod keeps TTFT acceptable: the measurement behind spec.autoscaling's default targets.

One real `textgen-launcher` (the benchmark model, CPU) under closed-loop load: at each concurrency level C, C
clients each send a streaming request as soon as their previous one ends, for --seconds. Meanwhile /metrics is
read every 0.25 s. Per level: mean tgi_queue_size, mean tgi_batch_current_size, their sum, TTFT p50/p99 and
output tokens/s. A pod is "at target" at the highest level whose TTFT p99 stays within --ttft-budget times the
TTFT p99 of one client alone; the queue (and queue + batch) measured there is the per-pod target.

Usage:  .venv/bin/python hack/bench-autoscaling-target.py [--levels 1,2,4,8,12,16,24] [--seconds 20]
        [--max-batch-size 8] [--ttft-budget 3] [--prompt-tokens 64] [--output-tokens 32] [--out FILE.json]
(not a test: numbers depend on the machine; operator/README.md, Autoscaling, records a run)
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from textgen_server.testing.bench_model import add_model_arguments, build_bench_model
from textgen_server.testing.launcher_health import wait_until_healthy
from textgen_server.testing.stream_timing import stream_one

HERE = Path(__file__).resolve().parent


def _bench_server() -> object:
    """hack/bench-server.py's prompt builder and port helper (its file name is not an importable module name)."""
    spec = importlib.util.spec_from_file_location("bench_server", HERE / "bench-server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_server"] = module      # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def gauges(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("tgi_queue_size", "tgi_batch_current_size"):
            values[name] = float(value)
    return values


async def run_level(base_url: str, texts: list[str], clients: int, seconds: float, output_tokens: int) -> dict:
    samples: list[dict[str, float]] = []
    ttfts: list[float] = []
    tokens = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        async def user(index: int) -> None:
            nonlocal tokens
            n = index
            while time.perf_counter() < deadline:
                times = await stream_one(base_url, texts[n % len(texts)], output_tokens)
                ttfts.append(times[1] - times[0])
                tokens += len(times) - 1
                n += clients

        async def sampler() -> None:
            while time.perf_counter() < deadline:
                samples.append(gauges((await client.get("/metrics")).text))
                await asyncio.sleep(0.25)

        started = time.perf_counter()
        await asyncio.gather(sampler(), *(user(i) for i in range(clients)))
        wall = time.perf_counter() - started
    queue = statistics.fmean(s.get("tgi_queue_size", 0) for s in samples)
    batch = statistics.fmean(s.get("tgi_batch_current_size", 0) for s in samples)
    ordered = sorted(ttfts)
    return {"clients": clients, "queue": queue, "batch": batch, "queue_and_batch": queue + batch,
            "ttft_p50": ordered[len(ordered) // 2], "ttft_p99": ordered[min(len(ordered) - 1, int(len(ordered) * .99))],
            "tokens_per_s": tokens / wall, "requests": len(ttfts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8,12,16,24")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--ttft-budget", type=float, default=3.0)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/textgen-bench"))
    parser.add_argument("--out", type=Path)
    add_model_arguments(parser)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    bench = _bench_server()
    model = build_bench_model(args, args.workdir)
    texts, _ = bench.build_prompts(model, 64, args.prompt_tokens)  # type: ignore[attr-defined]
    port = bench.free_port()  # type: ignore[attr-defined]
    log_path = args.workdir / "autoscaling-target-launcher.log"
    command = [str(Path(sys.executable).parent / "textgen-launcher"), "--model-id", str(model), "--hostname",
               "127.0.0.1", "--port", str(port), "--shard-uds-path", str(args.workdir / "target-shard"),
               "--max-concurrent-requests", "1024", "--max-batch-size", str(args.max_batch_size)]
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(process, base_url, 600, log_path.read_text, poll_seconds=0.5)
        asyncio.run(run_level(base_url, texts, 1, 3, 4))      # first-request costs out of the measurement
        rows = [asyncio.run(run_level(base_url, texts, c, args.seconds, args.output_tokens))
                for c in (int(x) for x in args.levels.split(","))]
    finally:
        process.terminate()
        process.wait(60)
    budget = rows[0]["ttft_p99"] * args.ttft_budget
    print(f"max-batch-size {args.max_batch_size}; TTFT budget {args.ttft_budget}x alone = {budget:.3f} s")
    print(f"{'clients':>7} {'queue':>6} {'batch':>6} {'q+b':>6} {'TTFT p50':>9} {'TTFT p99':>9} {'tok/s':>7}")
    for r in rows:
        mark = " within budget" if r["ttft_p99"] <= budget else ""
        print(f"{r['clients']:>7} {r['queue']:6.2f} {r['batch']:6.2f} {r['queue_and_batch']:6.2f} "
              f"{r['ttft_p50']:9.3f} {r['ttft_p99']:9.3f} {r['tokens_per_s']:7.1f}{mark}")
    within = [r for r in rows if r["ttft_p99"] <= budget]
    if within:
        top = within[-1]
        print(f"at target: queue {top['queue']:.1f}, queue+batch {top['queue_and_batch']:.1f} per pod "
              f"({top['clients']} clients)")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
