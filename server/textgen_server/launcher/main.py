"""`textgen-launcher`: resolve the model, start shards, warm up, serve HTTP; supervise and drain.

Lifecycle (what Kubernetes sees):
1. HTTP starts first, so /health answers 503 while the model loads and warms up.
2. Shards start, open their sockets, answer Info and Warmup; the KV cache size is logged as TGI does.
3. /health turns 200. If a shard process dies, the launcher logs it and exits 1 within a second or so.
4. SIGTERM/SIGINT: /health and new requests get 503, in-flight requests finish (bounded by
   --graceful-termination-timeout), shards stop, the launcher exits 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from textgen_server.launcher.config import ConfigError, LauncherArgs, LauncherConfig, build_config, parse_args
from textgen_server.launcher.serving import load_tokenizer, start_serving
from textgen_server.devices import describe
from textgen_server.launcher.shards import ShardProcess, ShardSpec
from textgen_server.models.hub import ModelResolveError, resolve_model
from textgen_server.router.app import Phase, RouterState, build_app
from textgen_server.router.ops import OpsOptions, configure_logging, install_ops
from textgen_server.speculation.config import (SpeculationConfigError, SpeculationPlan, check_medusa_heads,
                                               plan_speculation)

logger = logging.getLogger("textgen_server.launcher")

# Time for the last responses' bytes to leave before uvicorn closes connections.
FINAL_FLUSH_SECONDS = 0.2
UVICORN_SHUTDOWN_SECONDS = 5
# After a shard failure the others may be stuck in a collective (deaf to SIGTERM until it times out): kill them
# soon, so that the pod restarts within seconds.
BROKEN_SHARD_STOP_SECONDS = 2.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the launcher drains first, then tells uvicorn to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code (0 after a drain, 1 on failure, 2 on bad config)."""
    level = os.environ.get("LOG_LEVEL", "INFO")
    configure_logging(level, json_output=False)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack: debugging hangs
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
        configure_logging(level, json_output=args.json_output)
        config = load_config(args)
    except (ConfigError, ModelResolveError) as error:
        logger.error("%s", error)
        return 2
    code = asyncio.run(Launcher(config).run())
    # Skip the interpreter's teardown of torch (imported by transformers' tokenizer), grpc and uvicorn threads:
    # it takes seconds, and the exit code must reach Kubernetes promptly. Nothing is left to flush but logs.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def load_config(args: LauncherArgs) -> LauncherConfig:
    """Parsed flags + environment -> model resolved once -> defaults from its config.json -> validated config."""
    model_path = resolve_model(args.model_id, args.revision, args.huggingface_hub_cache, args.hf_token,
                               with_code=args.trust_remote_code)
    speculation = _plan_speculation(model_path, args.speculate)
    if args.speculation_costs == "flat" and speculation.num_tokens == 0:
        raise ConfigError(f"--speculation-costs {args.speculation_costs} applies to speculation, which is off "
                          "(--speculate 0 or unset on a model without Medusa heads): set --speculate N or drop it")
    if speculation.medusa is not None:  # a Medusa repository names its base model: that is what the shards load
        model_path = resolve_model(speculation.medusa.base_model_id, None, args.huggingface_hub_cache, args.hf_token,
                                   with_code=args.trust_remote_code)
    with open(model_path / "config.json", encoding="utf-8") as file:
        model_config = json.load(file)
    _check_medusa(speculation, model_config)
    config = dataclasses.replace(build_config(args, model_path, model_config), speculation=speculation)
    for warning in config.warnings:  # accepted but not applied: said once, loudly
        logger.warning("%s", warning)
    return config


def _plan_speculation(model_path: Path, speculate: int | None) -> SpeculationPlan:
    try:
        return plan_speculation(model_path, speculate)
    except SpeculationConfigError as error:
        raise ConfigError(str(error)) from error


def _check_medusa(speculation: SpeculationPlan, model_config: dict[str, Any]) -> None:
    """Heads that do not fit the base model are refused before any shard starts (exit 2, not a shard crash)."""
    if speculation.medusa is not None:
        try:
            check_medusa_heads(speculation.medusa, int(model_config["hidden_size"]), int(model_config["vocab_size"]))
        except (SpeculationConfigError, KeyError) as error:
            raise ConfigError(f"Medusa: {error}") from error


class Launcher:
    """Owns the HTTP server, the shard processes and the router state for one run."""

    def __init__(self, config: LauncherConfig) -> None:
        self.config = config
        self.state = RouterState(payload_limit=config.args.payload_limit)
        self.shards: list[ShardProcess] = []
        app = build_app(self.state)
        install_ops(app, OpsOptions(api_key=config.args.api_key, cors_allow_origins=config.args.cors_allow_origin),
                    on_rejected=self.state.metrics.request_rejected)
        self.server = _Server(uvicorn.Config(app, host=config.args.hostname,
                                             port=config.args.port, log_level="warning", lifespan="off",
                                             # uvicorn's loggers propagate to ours (text or --json-output).
                                             log_config=None,
                                             # A backstop: drained requests are done or cancelled by now.
                                             timeout_graceful_shutdown=UVICORN_SHUTDOWN_SECONDS))

    async def run(self) -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        server_task = asyncio.create_task(self.server.serve(), name="http")
        signalled = asyncio.create_task(stop.wait(), name="signal")
        try:
            return await self._supervise(server_task, signalled)
        finally:
            self.server.should_exit = True
            await _cancel(signalled)
            self._fail_in_flight_if_broken()
            stop_timeout = BROKEN_SHARD_STOP_SECONDS if self.state.phase == Phase.BROKEN else 10.0
            await asyncio.gather(*(shard.stop(stop_timeout) for shard in self.shards))
            await asyncio.gather(server_task, return_exceptions=True)
            if self.state.serving is not None:
                logger.info("batching totals: %s", self.state.serving.batcher.summary())
                await self.state.serving.batcher.client.close()
            logger.info("launcher stopped")

    def _fail_in_flight_if_broken(self) -> None:
        """After a shard failure no request can finish: each gets its error now (an SSE error event or a 5xx)
        instead of waiting out uvicorn's shutdown backstop with an open connection and no answer."""
        if self.state.phase != Phase.BROKEN or self.state.serving is None:
            return
        failed = self.state.serving.batcher.cancel_all(
            "a shard of this server failed and the server is restarting; retry on another replica")
        if failed:
            logger.warning("ended %d in-flight request(s) with an error after the shard failure", failed)

    async def _supervise(self, server_task: asyncio.Task[None], signalled: asyncio.Task[bool]) -> int:
        startup = asyncio.create_task(self._start(), name="startup")
        done = await _first_of(startup, signalled, server_task)
        if startup not in done:
            await _cancel(startup)
            return 0 if signalled in done else _http_failed(server_task)
        if startup.exception() is not None:
            self.state.phase = Phase.BROKEN
            logger.error("startup failed: %s", startup.exception())
            return 1
        loop_task = startup.result()
        exits = [asyncio.create_task(shard.wait_exit()) for shard in self.shards]
        done = await _first_of(signalled, server_task, loop_task, *exits)
        try:
            return await self._after(done, server_task, loop_task, exits)
        finally:
            await _cancel(loop_task, *exits)

    async def _after(self, done: set[asyncio.Future[Any]], server_task: asyncio.Future[Any],
                     loop_task: asyncio.Future[Any], exits: list[asyncio.Task[int]]) -> int:
        """What ended the serving phase decides the exit code: a failure 1, a signal 0 after draining."""
        for rank, task in enumerate(exits):
            if task in done:
                self.state.phase = Phase.BROKEN
                logger.error("shard %d exited unexpectedly with code %s; exiting so that the pod restarts",
                             rank, task.result())
                return 1
        if loop_task in done:
            self.state.phase = Phase.BROKEN
            logger.error("the batching loop stopped after a shard failure; exiting so that the pod restarts")
            return 1
        if server_task in done:
            return _http_failed(server_task)
        return await self._drain()

    async def _drain(self) -> int:
        self.state.phase = Phase.DRAINING
        batcher = self.state.serving.batcher if self.state.serving is not None else None
        timeout = self.config.args.graceful_termination_timeout
        if batcher is not None:
            logger.info("signal received: draining %d in-flight request(s) (at most %.0f s)",
                        batcher.num_in_flight, timeout)
            if not await batcher.wait_idle(timeout):
                logger.warning("%d request(s) still running after %.0f s; stopping anyway",
                               batcher.num_in_flight, timeout)
                # Each gets a final error (an SSE error event or a 5xx), so no client waits on a closed server.
                batcher.cancel_all(f"the server is shutting down and --graceful-termination-timeout ({timeout:g} s) "
                                   "expired; retry on another replica")
        await asyncio.sleep(FINAL_FLUSH_SECONDS)
        return 0

    async def _start(self) -> asyncio.Task[None]:
        args, parallel = self.config.args, self.config.parallel
        group_key = secrets.token_hex(8)
        tokenizer_task = asyncio.ensure_future(asyncio.to_thread(load_tokenizer, self.config))
        (logger.warning if parallel.device.overridden else logger.info)("%s", describe(parallel.device))
        logger.info("starting %d shard(s) on %s (%s between ranks), %d CPU thread(s) each", parallel.num_shard,
                    parallel.device.actual, parallel.device.backend, parallel.threads_per_rank)
        for rank in range(parallel.num_shard):
            spec = ShardSpec(model_path=self.config.model_path, uds_path=args.shard_uds_path, rank=rank,
                             world_size=parallel.num_shard, dtype=args.dtype, kv_cache_memory=args.kv_cache_memory,
                             cuda_memory_fraction=args.cuda_memory_fraction, cuda_graphs=args.cuda_graphs,
                             device=parallel.device.actual, master_addr=parallel.master_addr,
                             master_port=parallel.master_port, num_threads=parallel.threads_per_rank,
                             join_timeout=args.shard_startup_timeout, group_key=group_key,
                             speculate=self.config.speculation.num_tokens,
                             speculation_costs=args.speculation_costs,
                             medusa_path=self.config.speculation.medusa.path if self.config.speculation.medusa else None,
                             **_static_shape_fields(self.config))
            self.shards.append(await ShardProcess.spawn(spec))
        await asyncio.gather(*(shard.wait_ready(args.shard_startup_timeout) for shard in self.shards))
        sockets = [shard.spec.socket_path for shard in self.shards]
        loop_task = await start_serving(self.config, self.state, sockets, tokenizer_task)
        self.state.phase = Phase.READY
        logger.info("ready: serving http://%s:%d", args.hostname, args.port)
        return loop_task


async def _first_of(*tasks: asyncio.Future[Any]) -> set[asyncio.Future[Any]]:
    done, _ = await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
    return done


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _static_shape_fields(config: LauncherConfig) -> dict[str, Any]:
    """ShardSpec's --static-shapes fields: the bucket sizes and whether the shard warms every shape."""
    if config.buckets is None:
        return {}
    buckets, gaudi = config.buckets, config.gaudi
    return {"bucket_sizes": (buckets.batch_bucket_size, buckets.prefill_batch_bucket_size,
                             buckets.pad_sequence_to_multiple_of),
            "shape_warmup": gaudi.warmup_enabled if gaudi is not None else True}


def _http_failed(server_task: asyncio.Future[Any]) -> int:
    error = server_task.exception() if server_task.done() and not server_task.cancelled() else None
    logger.error("the HTTP server stopped (%s); check that --hostname/--port are free and valid",
                 error or "bind failed")
    return 1


if __name__ == "__main__":
    sys.exit(main())
