"""The shard process: `python -m textgen_server.shard --model-path DIR --uds-path PATH --rank R ...`.

It loads the model first and only then listens on the unix socket `<uds-path>-<rank>`, so the socket's
appearance tells the launcher the shard is ready for Info/Warmup. Exits non-zero on a fatal error; SIGTERM
stops it (in-flight calls get a short grace period).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc

from textgen_server import devices
from textgen_server.devices import DEVICES
from textgen_server.pb import shard_pb2_grpc as pb_grpc

if TYPE_CHECKING:   # torch loads only in serve(): --help and flag errors stay fast
    import torch

    from textgen_server.shard.runner import ModelRunner

logger = logging.getLogger("textgen_server.shard")

# Steps for large batches exceed gRPC's 4 MiB default; the socket is local and trusted.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ShardConfig:
    """The shard process's configuration, built once from the command line."""

    model_path: Path
    uds_path: str
    rank: int
    world_size: int
    dtype: str
    device: str
    kv_cache_memory: int | None
    master_addr: str = "localhost"
    master_port: int = 29500
    num_threads: int | None = None
    join_timeout: float = 600.0
    group_key: str = "textgen"
    speculate: int = 0
    medusa_path: Path | None = None
    speculation_costs: str = "measured"   # measured at warmup (shard/verify_cost.py) or flat
    bucket_sizes: tuple[int, int, int] | None = None   # --static-shapes B,P,S: shard/static_runner.py
    shape_warmup: bool = True
    cuda_memory_fraction: float = 1.0     # share of the CUDA device this process may use (KV sized from free memory)
    cuda_graphs: tuple[int, ...] = ()     # decode batch sizes replayed as CUDA graphs (shard/cuda_graphs.py)

    @property
    def socket_path(self) -> str:
        return f"{self.uds_path}-{self.rank}"


def parse_args(argv: list[str] | None = None) -> ShardConfig:
    """Parse the shard's flags (set by the launcher, see launcher/shards.py)."""
    parser = argparse.ArgumentParser(prog="python -m textgen_server.shard", description=__doc__)
    parser.add_argument("--model-path", required=True, type=Path, help="local checkpoint directory")
    parser.add_argument("--uds-path", required=True, help="socket path prefix; the shard listens on PATH-RANK")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="torch device type, resolved by the launcher (textgen_server/devices.py)")
    parser.add_argument("--kv-cache-memory", type=int, default=None,
                        help="default KV cache bytes when Warmup passes none (CPU default: 1 GiB)")
    parser.add_argument("--cuda-memory-fraction", type=float, default=1.0,
                        help="on cuda without --kv-cache-memory: the share of the device this process may use; the "
                        "KV cache takes 90%% of what is free of it after loading and the largest prefill (TGI)")
    parser.add_argument("--cuda-graphs", type=devices.parse_cuda_graph_sizes, default=(), metavar="SIZES",
                        help="on cuda: capture decode steps of these batch sizes (e.g. 1,2,4,8) as CUDA graphs at "
                        "Warmup and replay them; 0 or nothing: none")
    parser.add_argument("--master-addr", default="localhost", help="rendezvous address of the ranks (world size > 1)")
    parser.add_argument("--master-port", type=int, default=29500, help="rendezvous port (rank 0 serves it)")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads of this rank")
    parser.add_argument("--join-timeout", type=float, default=600.0,
                        help="seconds to wait for every rank to reach the rendezvous")
    parser.add_argument("--group-key", default="textgen",
                        help="this launch's namespace in the rendezvous store (the launcher draws one per launch)")
    parser.add_argument("--speculate", type=int, default=0,
                        help="speculative candidates per step (0 = off); n-gram unless --medusa-path is given")
    parser.add_argument("--medusa-path", type=Path, default=None,
                        help="Medusa repository whose heads propose the candidates (the launcher resolves it)")
    parser.add_argument("--speculation-costs", choices=["measured", "flat"], default="measured",
                        help="with --speculate: time verify steps at warmup (measured) or price them alike (flat)")
    parser.add_argument("--static-shapes", type=_bucket_sizes, default=None, metavar="BATCH,PREFILL_BATCH,PAD",
                        help="pad every forward pass to these buckets (BATCH_BUCKET_SIZE, PREFILL_BATCH_BUCKET_SIZE, "
                        "PAD_SEQUENCE_TO_MULTIPLE_OF) and warm every shape at Warmup (shard/static_runner.py)")
    parser.add_argument("--no-shape-warmup", action="store_true",
                        help="with --static-shapes: do not run every shape at Warmup (WARMUP_ENABLED=false)")
    args = parser.parse_args(argv)
    if not 0 <= args.rank < args.world_size:
        parser.error(f"--rank {args.rank} must be in [0, --world-size {args.world_size})")
    if args.device == "hpu" and args.static_shapes is None:
        parser.error("--device hpu needs --static-shapes BATCH,PREFILL_BATCH,PAD: HPU graphs run bucketed static "
                     "shapes only (the launcher always passes it on hpu)")
    problem = devices.memory_fraction_problem(args.cuda_memory_fraction, args.device, args.kv_cache_memory is not None,
                                      args.static_shapes is not None)
    if problem:
        parser.error(problem)
    problem = devices.cuda_graphs_problem(args.cuda_graphs, args.device, args.static_shapes is not None, args.world_size)
    if problem:
        parser.error(problem)
    return ShardConfig(args.model_path, args.uds_path, args.rank, args.world_size, args.dtype, args.device,
                       args.kv_cache_memory, args.master_addr, args.master_port, args.num_threads, args.join_timeout,
                       args.group_key, args.speculate, args.medusa_path, args.speculation_costs,
                       args.static_shapes, not args.no_shape_warmup, args.cuda_memory_fraction, args.cuda_graphs)


def _bucket_sizes(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: write three positive whole numbers, e.g. 8,4,128")
    return int(parts[0]), int(parts[1]), int(parts[2])


def serve(config: ShardConfig) -> None:
    """Load the model, listen on the socket, block until SIGTERM/SIGINT."""
    from textgen_server.shard.distributed import init_process_group, select_device, set_num_threads
    from textgen_server.shard.servicer import ErrorMappingInterceptor, ShardServicer

    set_num_threads(config.num_threads)
    gaudi = None
    if config.device == "hpu":  # the only path that imports the Habana stack (gaudi/runner.py, gaudi/backend.py)
        from textgen_server.gaudi.runner import load_backend
        gaudi = load_backend(config.rank, config.world_size)
        device = gaudi[0].select_device(config.rank)
    else:
        device = select_device(config.device, config.rank)  # before the rendezvous: a missing device fails fast
    init_process_group(config.device, config.rank, config.world_size, config.master_addr, config.master_port,
                       config.join_timeout, config.group_key, probe_device=device)
    runner = build_runner(config, device, gaudi)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[ErrorMappingInterceptor(fatal_internal=config.world_size > 1)],
        options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    pb_grpc.add_ShardServicer_to_server(ShardServicer(runner), server)
    if os.path.exists(config.socket_path):
        os.unlink(config.socket_path)  # a stale socket from a crashed predecessor
    server.add_insecure_port(f"unix://{config.socket_path}")
    server.start()
    logger.info("shard %d serving %s on unix://%s", config.rank, config.model_path, config.socket_path)

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.info("shard %d: signal %d, stopping", config.rank, signum)
        server.stop(STOP_GRACE_SECONDS)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait_for_termination()
    if os.path.exists(config.socket_path):
        os.unlink(config.socket_path)


def build_runner(config: ShardConfig, device: torch.device, gaudi: tuple[Any, Any] | None = None) -> ModelRunner:
    """The runner the flags ask for: dynamic, static shapes (--static-shapes), or static shapes on a Gaudi card
    (`gaudi`: load_backend's (backend module, plan); --device hpu)."""
    import torch

    from textgen_server.shard.runner import ModelRunner
    from textgen_server.shard.warmup import default_kv_cache_bytes

    kwargs: dict[str, Any] = dict(default_kv_cache_bytes=config.kv_cache_memory
                                  or default_kv_cache_bytes(device.type, config.world_size),
                                  speculate=config.speculate, medusa_path=config.medusa_path,
                                  speculation_costs=config.speculation_costs)
    if config.bucket_sizes is None:
        if device.type == "cuda" and config.kv_cache_memory is None:  # TGI: the KV cache takes the free memory
            kwargs.update(device_memory=lambda: torch.cuda.mem_get_info(device),
                          memory_fraction=config.cuda_memory_fraction)
        kwargs.update(cuda_graphs=config.cuda_graphs)
        return ModelRunner(config.model_path, config.dtype, str(device), config.rank, config.world_size, **kwargs)
    from textgen_server.shard.static_runner import BucketSizes, StaticShapeRunner
    kwargs.update(buckets=BucketSizes(*config.bucket_sizes), warmup_enabled=config.shape_warmup)
    if gaudi is not None:
        from textgen_server.gaudi.runner import HpuRunner
        return HpuRunner(config.model_path, config.dtype, str(device), config.rank, config.world_size,
                         backend=gaudi[0], plan=gaudi[1], **kwargs)
    return StaticShapeRunner(config.model_path, config.dtype, str(device), config.rank, config.world_size, **kwargs)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    try:
        serve(config)
    except Exception as error:  # noqa: BLE001 - a fatal start-up error: say it plainly and exit non-zero
        logger.exception("shard %d failed: %s", config.rank, error)
        print(f"textgen shard {config.rank}: fatal: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter teardown: after a SIGTERM a gRPC worker thread may still be blocked in a collective whose
    # peer is gone, and joining it would keep a dead group's rank alive.
    os._exit(code)
