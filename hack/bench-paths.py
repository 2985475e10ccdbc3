#!/usr/bin/env python
"""Tokens/s of each HTTP path on ONE server, as ratios to /generate_stream (issue 18), plus router and shard CPU
milliseconds per generated token (/proc/PID/stat: steadier than tokens/s on a busy machine) and peak RSS.

Paths: TGI /generate and /generate_stream, OpenAI /v1/chat/completions and /v1/completions, each streamed and
not. One round sends N concurrent requests (default 32) of one path, greedy, EOS ignored, O output tokens; every
round runs every path once, the order rotated per round, so slow phases of a noisy machine hit every path alike.
Tokens are counted from the server's answers (details.generated_tokens, usage.completion_tokens; a stream's final
event or usage chunk). Reported per path: median tokens/s over the rounds and the median of the per-round ratios
to /generate_stream (each ratio from the same round). The clients are the same httpx code for every path.

`--baseline-tree DIR` is an A/B instead: a second launcher runs DIR/server's code (PYTHONPATH), both stay up,
and every round runs each path on both, alternated; reported: new/base tokens/s per path.
`--profile DIR` also runs `py-spy record` (pip: py-spy, in the dev extra) on the launcher (router) and its shard
for the whole measurement and prints each one's top functions by own time (see server/docs/performance.md).

Usage:  .venv/bin/python hack/bench-paths.py [--requests 32] [--prompt-tokens 64] [--output-tokens 64]
        [--rounds 3] [--paths generate_stream,chat_stream,...] [--profile DIR] [--launcher-arg=--flag=value]
        [--hidden-size 768 --layers 8 --intermediate-size 2048]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from textgen_server.testing.bench_launcher import launcher_process
from textgen_server.testing.bench_model import add_model_arguments, build_bench_model

BASELINE = "generate_stream"
Client = Callable[[httpx.AsyncClient, str, int], Awaitable[int]]


async def tgi(client: httpx.AsyncClient, text: str, tokens: int) -> int:
    body = {"inputs": text, "parameters": {"max_new_tokens": tokens, "ignore_eos_token": True, "details": True}}
    response = await client.post("/generate", json=body)
    response.raise_for_status()
    return int(response.json()["details"]["generated_tokens"])


async def tgi_stream(client: httpx.AsyncClient, text: str, tokens: int) -> int:
    body = {"inputs": text, "parameters": {"max_new_tokens": tokens, "ignore_eos_token": True}}
    last: dict[str, Any] = {}
    async for event in _events(client, "/generate_stream", body):
        last = event
    return int(last["details"]["generated_tokens"])


def _openai_body(chat: bool, text: str, tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "bench", "max_tokens": tokens, "ignore_eos": True, "temperature": 0}
    body.update({"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text})
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def openai_client(chat: bool, stream: bool) -> Client:
    route = "/v1/chat/completions" if chat else "/v1/completions"

    async def call(client: httpx.AsyncClient, text: str, tokens: int) -> int:
        body = _openai_body(chat, text, tokens, stream)
        if not stream:
            response = await client.post(route, json=body)
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])
        usage = 0
        async for event in _events(client, route, body):
            if event.get("usage"):
                usage = int(event["usage"]["completion_tokens"])
        return usage
    return call


async def _events(client: httpx.AsyncClient, route: str, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    async with client.stream("POST", route, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                event = json.loads(line[5:])
                if "error" in event:
                    raise RuntimeError(line)
                yield event


PATHS: dict[str, Client] = {
    "generate": tgi, "generate_stream": tgi_stream,
    "chat": openai_client(True, False), "chat_stream": openai_client(True, True),
    "completions": openai_client(False, False), "completions_stream": openai_client(False, True)}


async def one_round(base_url: str, call: Client, texts: list[str], tokens: int) -> tuple[float, int]:
    """All prompts at once through one path: (wall seconds, generated tokens the server reported)."""
    limits = httpx.Limits(max_connections=len(texts) + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=3600, limits=limits) as client:
        started = time.perf_counter()
        counts = await asyncio.gather(*(call(client, text, tokens) for text in texts))
        return time.perf_counter() - started, sum(counts)


@dataclass(frozen=True)
class Server:
    label: str
    url: str
    router_pid: int
    shard_pids: list[int]


@dataclass(frozen=True)
class Round:
    """One path's round on one server. CPU seconds do not depend on how busy the machine is, wall time does."""

    wall_s: float
    tokens: int
    router_cpu_s: float
    shard_cpu_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_round(server: Server, call: Client, texts: list[str], tokens: int) -> Round:
    router_before = cpu_seconds(server.router_pid)
    shard_before = sum(cpu_seconds(pid) for pid in server.shard_pids)
    wall, generated = asyncio.run(one_round(server.url, call, texts, tokens))
    return Round(wall, generated, cpu_seconds(server.router_pid) - router_before,
                 sum(cpu_seconds(pid) for pid in server.shard_pids) - shard_before)


def server_of(label: str, url: str, process: subprocess.Popen[bytes]) -> Server:
    return Server(label, url, process.pid, child_pids(process.pid))


class RssSampler:
    """Peak resident memory (VmRSS) of the launcher and its shards, sampled every 0.5 s in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids, self.peak_kib = pids, Counter[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pid in self.pids.items():
                self.peak_kib[name] = max(self.peak_kib[name], _rss_kib(pid))


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def start_profilers(pids: dict[str, int], out_dir: Path) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`py-spy record` (raw collapsed stacks, 50 Hz, idle frames left out) on each process until stopped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).parent / "py-spy"
    started = []
    for name, pid in pids.items():
        path = out_dir / f"{name}.txt"
        command = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "--output",
                   str(path), "--nonblocking"]
        started.append((name, path, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    return started


def top_functions(path: Path, count: int) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """From py-spy's raw collapsed stacks: (share of samples, function) by own time, and by inclusive time for
    this project's functions (textgen_server/...)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        own[frames[-1]] += int(samples)
        for frame in set(frames):
            if "textgen_server/" in frame:
                inclusive[frame.split(":")[0] + ")"] += int(samples)  # one entry per function, lines merged
    total = sum(own.values()) or 1
    return ([(samples / total, frame) for frame, samples in own.most_common(count)],
            [(samples / total, frame) for frame, samples in inclusive.most_common(count)])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from: {', '.join(PATHS)}")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the router and the shard into DIR")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="A/B: also run a launcher on DIR/server (e.g. `git archive` of an older commit, with "
                             "its generated pb/ copied in) and report this checkout's tokens/s over it per path")
    add_model_arguments(parser)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textgen-bench")
    parser.add_argument("--launcher-arg", action="append", default=[], help="extra launcher flag (repeatable)")
    return parser.parse_args()


def measure(servers: list[Server], paths: list[str], texts: list[str], tokens: int, rounds: int
            ) -> dict[tuple[str, str], list[Round]]:
    """Per (path, server label): one Round per round; the order of paths and servers rotates."""
    results: dict[tuple[str, str], list[Round]] = {}
    for index in range(rounds):
        order = paths[index % len(paths):] + paths[:index % len(paths)]
        for name in order:
            for server in (servers if index % 2 == 0 else servers[::-1]):
                run = timed_round(server, PATHS[name], texts, tokens)
                results.setdefault((name, server.label), []).append(run)
                print(f"round {index + 1} {name:20s} {server.label:4s} {run.tokens_per_s:8.1f} tok/s ({run.tokens} "
                      f"tokens, {run.wall_s:.1f} s; CPU ms/token: router {1e3 * run.router_cpu_s / run.tokens:.2f}, "
                      f"shard {1e3 * run.shard_cpu_s / run.tokens:.2f})", flush=True)
    return results


def _cpu_ms(runs: list[Round], which: str) -> float:
    return statistics.median(1e3 * getattr(run, f"{which}_cpu_s") / run.tokens for run in runs)


def print_report(results: dict[str, list[Round]], expected: int) -> None:
    print(f"\n{'path':20s} {'tok/s p50':>10s} {'x ' + BASELINE:>18s} {'router CPU ms/tok':>18s} "
          f"{'shard CPU ms/tok':>17s}  (medians; ratios per round)")
    base = [run.tokens_per_s for run in results.get(BASELINE, [])]
    for name, runs in results.items():
        rates = [run.tokens_per_s for run in runs]
        ratio = statistics.median(r / b for r, b in zip(rates, base)) if base else float("nan")
        short = " (tokens short!)" if any(run.tokens != expected for run in runs) else ""
        print(f"{name:20s} {statistics.median(rates):10.1f} {ratio:18.3f} {_cpu_ms(runs, 'router'):18.2f} "
              f"{_cpu_ms(runs, 'shard'):17.2f}{short}")


def main() -> None:
    args = parse_args()
    paths = [name for name in args.paths.split(",") if name]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        sys.exit(f"--paths: unknown {unknown}; choose from {sorted(PATHS)}")
    if args.baseline_tree is not None and args.profile is not None:
        sys.exit("--profile and --baseline-tree: profile one server at a time; drop one of them")
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = build_bench_model(args, args.workdir)
    from importlib import import_module
    texts = import_module("bench-server").build_prompts(model_dir, args.requests, args.prompt_tokens)[0]
    if args.baseline_tree is not None:
        compare(args, model_dir, paths, texts)
        return
    with launcher_process(model_dir, args.launcher_arg, args.workdir, "paths") as (base_url, process):
        asyncio.run(one_round(base_url, tgi_stream, texts[:2], 4))  # first-request costs out of the measurement
        server = server_of("", base_url, process)
        pids = {"router": server.router_pid, **{f"shard{i}": pid for i, pid in enumerate(server.shard_pids)}}
        profilers = start_profilers(pids, args.profile) if args.profile else []
        with RssSampler(pids) as rss:
            results = measure([server], paths, texts, args.output_tokens, args.rounds)
        for _, _, profiler in profilers:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT (SIGTERM loses it)
            profiler.wait(60)
    print(f"\n{args.requests} concurrent x ({args.prompt_tokens} prompt + {args.output_tokens} output) tokens, "
          f"{args.rounds} rounds; load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")
    print_report({name: runs for (name, _), runs in results.items()}, args.requests * args.output_tokens)
    print("peak RSS under load: " + ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in rss.peak_kib.items()))
    for name, path, _ in profilers:
        own, inclusive = top_functions(path, 25)
        for title, rows in (("own time", own), ("inclusive time, textgen_server", inclusive)):
            print(f"\n{name}: top functions by {title} ({path})")
            for share, frame in rows:
                print(f"  {share:6.1%}  {frame}")


def compare(args: argparse.Namespace, model_dir: Path, paths: list[str], texts: list[str]) -> None:
    """This checkout ("new") against the server package of `--baseline-tree` ("base"): two launchers up at once,
    each round runs every path on both (order alternated), so both see the same machine load."""
    base_env = {**os.environ, "PYTHONPATH": str(args.baseline_tree / "server")}
    with launcher_process(model_dir, args.launcher_arg, args.workdir, "paths-new") as (new_url, new), \
            launcher_process(model_dir, args.launcher_arg, args.workdir, "paths-base", env=base_env) as (base_url, base):
        servers = [server_of("new", new_url, new), server_of("base", base_url, base)]
        for server in servers:
            asyncio.run(one_round(server.url, tgi_stream, texts[:2], 4))
        results = measure(servers, paths, texts, args.output_tokens, args.rounds)
    print(f"\n{args.requests} concurrent x ({args.prompt_tokens} prompt + {args.output_tokens} output) tokens, "
          f"{args.rounds} rounds; load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"\n{'path':20s} {'new tok/s':>10s} {'base tok/s':>10s} {'new/base':>9s} {'router CPU ms/tok':>18s} "
          f"{'shard CPU ms/tok':>17s}  (medians; ratios per round; CPU as new/base)")
    for name in paths:
        new, base = results[(name, "new")], results[(name, "base")]
        ratio = statistics.median(n.tokens_per_s / b.tokens_per_s for n, b in zip(new, base))
        cpu = [f"{_cpu_ms(new, which):.2f}/{_cpu_ms(base, which):.2f}" for which in ("router", "shard")]
        print(f"{name:20s} {statistics.median(r.tokens_per_s for r in new):10.1f} "
              f"{statistics.median(r.tokens_per_s for r in base):10.1f} {ratio:9.3f} {cpu[0]:>18s} {cpu[1]:>17s}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
