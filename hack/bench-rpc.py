#!/usr/bin/env python
"""What one step costs between the router and the shard, outside the model: the Prefill/Decode RPC round trip.

The real ShardClient (router side) calls the real ShardServicer (its compute thread included) over a unix socket;
the runner behind it answers at once (one greedy token per item), so everything measured is protocol: building
the StepRequest, gRPC both ways, StepItems on the shard, the Generations back. Compared in the same run with the
floor, a bare gRPC unary call over the same socket type carrying the same serialized bytes with no conversion and
no compute-thread hop. Decode steps of B items (one token, a block table of --blocks entries each).

With --baseline-tree DIR the same measurement also runs on DIR/server's code (a subprocess with PYTHONPATH),
e.g. the tree before a protocol change: `git archive <commit> server | tar -x -C DIR` and copy
server/textgen_server/pb into it (the generated modules are not tracked).

Usage:  .venv/bin/python hack/bench-rpc.py [--batch-sizes 16,64,256] [--calls 300] [--blocks 16]
        [--baseline-tree DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="16,64,256", help="comma-separated decode batch sizes")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per batch size (after 30 untimed)")
    parser.add_argument("--blocks", type=int, default=16, help="block-table entries per item")
    parser.add_argument("--baseline-tree", type=Path, default=None, help="also measure DIR/server's code")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one measurement, JSON out
    args = parser.parse_args()
    try:
        args.sizes = [int(size) for size in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give comma-separated integers, e.g. 16,64,256")
    if len(set(args.sizes)) != len(args.sizes) or min(args.sizes) < 1:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give each size once, each at least 1")
    if args.baseline_tree is not None and not (args.baseline_tree / "server" / "textgen_server" / "pb").is_dir():
        parser.error(f"--baseline-tree {args.baseline_tree}: no server/textgen_server/pb there; extract the tree "
                     "with `git archive <commit> server | tar -x -C DIR` and copy server/textgen_server/pb into it")
    return args


class InstantRunner:
    """Answers every step at once with one token per sampling item: no model, so only the protocol is timed."""

    def step(self, items: list[Any]) -> list[Any]:
        from textgen_server.protocol import Generation, Token
        return [Generation(item.request_id, Token(item.token_ids[-1] + 1, -0.5)) for item in items if item.sample]


def measure(sizes: list[int], calls: int, blocks: int) -> dict[str, dict[int, float]]:
    """Mean milliseconds per call: {"ours": {B: ms}, "floor": {B: ms}}."""
    import grpc

    from textgen_server.pb import shard_pb2_grpc as pb_grpc
    from textgen_server.protocol import StepItem
    from textgen_server.router.client import CHANNEL_OPTIONS, ShardClient
    from textgen_server.shard import convert
    from textgen_server.shard.servicer import ErrorMappingInterceptor, ShardServicer

    socket = Path(tempfile.mkdtemp(prefix="bench-rpc-")) / "shard.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[ErrorMappingInterceptor()],
                         options=CHANNEL_OPTIONS)
    pb_grpc.add_ShardServicer_to_server(ShardServicer(InstantRunner()), server)
    canned: dict[str, bytes] = {}
    echo = grpc.method_handlers_generic_handler("bench.Floor", {"Echo": grpc.unary_unary_rpc_method_handler(
        lambda request, context: canned["response"])})
    server.add_generic_rpc_handlers((echo,))
    server.add_insecure_port(f"unix://{socket}")
    server.start()

    def step_items(size: int) -> list[Any]:
        return [StepItem(i, [100 + i], 300, list(range(i * blocks, (i + 1) * blocks)), True) for i in range(size)]

    async def timed(call: Any) -> float:
        for _ in range(30):
            await call()
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        return (time.perf_counter() - started) / calls * 1e3

    async def run() -> dict[str, dict[int, float]]:
        client = await ShardClient.connect([str(socket)])
        channel = grpc.aio.insecure_channel(f"unix://{socket}", options=CHANNEL_OPTIONS)
        floor_call = channel.unary_unary("/bench.Floor/Echo")
        results: dict[str, dict[int, float]] = {"ours": {}, "floor": {}}
        for size in sizes:
            items = step_items(size)
            request = convert.step_request_to_pb(items).SerializeToString()
            canned["response"] = convert.step_response_to_pb(InstantRunner().step(items)).SerializeToString()
            results["ours"][size] = await timed(lambda: client.step(items, False))
            results["floor"][size] = await timed(lambda: floor_call(request))
        await client.close()
        await channel.close()
        return results

    try:
        return asyncio.run(run())
    finally:
        server.stop(0)


def measure_tree(tree: Path, args: argparse.Namespace) -> dict[str, dict[int, float]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree.resolve() / "server"),
                                                                      os.environ.get("PYTHONPATH")]))}
    output = subprocess.run([sys.executable, __file__, "--worker", "--batch-sizes", args.batch_sizes, "--calls",
                             str(args.calls), "--blocks", str(args.blocks)], env=env, check=True,
                            capture_output=True, text=True).stdout
    raw = json.loads(output)
    return {name: {int(size): ms for size, ms in row.items()} for name, row in raw.items()}


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(measure(args.sizes, args.calls, args.blocks)))
        return
    ours = measure(args.sizes, args.calls, args.blocks)
    base = measure_tree(args.baseline_tree, args) if args.baseline_tree is not None else None
    print(f"decode step RPC round trip, instant runner, {args.blocks} block ids per item, {args.calls} calls each, "
          f"cpus={os.cpu_count()}")
    header = f"{'batch':>6s} {'ours ms':>9s} {'floor ms':>9s} {'ours/floor':>11s} {'us/item over floor':>19s}"
    print(header + (f" {'base ms':>9s} {'ours/base':>10s}" if base else ""))
    for size in args.sizes:
        mine, floor = ours["ours"][size], ours["floor"][size]
        row = f"{size:6d} {mine:9.3f} {floor:9.3f} {mine / floor:10.2f}x {(mine - floor) / size * 1e3:19.1f}"
        if base is not None:
            row += f" {base['ours'][size]:9.3f} {mine / base['ours'][size]:9.2f}x"
        print(row)


if __name__ == "__main__":
    main()
