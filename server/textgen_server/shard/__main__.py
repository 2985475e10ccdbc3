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

import grpc

from textgen_server.pb import shard_pb2_grpc as pb_grpc

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
    parser.add_argument("--device", default="cpu", help="torch device type (cpu now; cuda/hpu backends later)")
    parser.add_argument("--kv-cache-memory", type=int, default=None,
                        help="default KV cache bytes when Warmup passes none (CPU default: 1 GiB)")
    args = parser.parse_args(argv)
    return ShardConfig(args.model_path, args.uds_path, args.rank, args.world_size, args.dtype, args.device,
                       args.kv_cache_memory)


def serve(config: ShardConfig) -> None:
    """Load the model, listen on the socket, block until SIGTERM/SIGINT."""
    from textgen_server.shard.runner import ModelRunner
    from textgen_server.shard.servicer import ErrorMappingInterceptor, ShardServicer
    from textgen_server.shard.warmup import DEFAULT_CPU_KV_CACHE_BYTES

    runner = ModelRunner(config.model_path, config.dtype, config.device, config.rank, config.world_size,
                         default_kv_cache_bytes=config.kv_cache_memory or DEFAULT_CPU_KV_CACHE_BYTES)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[ErrorMappingInterceptor()],
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
    sys.exit(main())
