"""From ready shard sockets to a serving router: Info, Warmup, KV bookkeeping, tokenizer, batching loop."""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import logging
from typing import Any

from textgen_server.engine.block_manager import BlockManager
from textgen_server.engine.scheduler import Scheduler, SchedulerConfig
from textgen_server.grammar.service import build_grammar_service
from textgen_server.launcher.config import LauncherConfig
from textgen_server.protocol import ModelInfo, WarmupResult, WarmupSpec, WatermarkParams
from textgen_server.router.app import RouterState, Serving
from textgen_server.router.batcher import Batcher
from textgen_server.router.client import ShardClient
from textgen_server.router.schemas import Info
from textgen_server.router.validation import Limits

logger = logging.getLogger(__name__)


def build_warmup_spec(config: LauncherConfig) -> WarmupSpec:
    args = config.args
    return WarmupSpec(max_input_tokens=config.max_input_tokens, max_total_tokens=config.max_total_tokens,
                      max_prefill_tokens=config.max_batch_prefill_tokens, max_batch_size=args.max_batch_size,
                      kv_cache_memory_bytes=args.kv_cache_memory, max_batch_total_tokens=args.max_batch_total_tokens)


def build_scheduler(config: LauncherConfig, warmup: WarmupResult) -> Scheduler:
    """The engine sized from the shard's warmup: the KV cache it allocated is the batch's token budget."""
    args = config.args
    total = warmup.max_supported_total_tokens
    if args.max_batch_total_tokens is not None:
        total = min(total, args.max_batch_total_tokens)
    scheduler_config = SchedulerConfig(max_batch_prefill_tokens=config.max_batch_prefill_tokens,
                                       max_batch_total_tokens=total, max_batch_size=args.max_batch_size,
                                       waiting_served_ratio=args.waiting_served_ratio,
                                       max_waiting_tokens=args.max_waiting_tokens, block_size=warmup.block_size,
                                       queue_threshold_ms=_queue_threshold_ms(config),
                                       buckets=dataclasses.replace(config.buckets, block_size=warmup.block_size)
                                       if config.buckets is not None else None)
    blocks = BlockManager(warmup.num_blocks, warmup.block_size,
                          enable_prefix_caching=not args.disable_prefix_caching)
    return Scheduler(scheduler_config, blocks)


def _queue_threshold_ms(config: LauncherConfig) -> int | None:
    """QUEUE_THRESHOLD_MS orders admission only where the shards run on hpu (TGI on Gaudi's setting); elsewhere the
    launcher reports the Gaudi variables as not applied and admission stays FIFO, as TGI's."""
    if config.gaudi is None or config.parallel.device.actual != "hpu":
        return None
    return config.gaudi.queue_threshold_ms


def build_limits(config: LauncherConfig, scheduler: Scheduler) -> Limits:
    # A request must fit the KV cache alone (the scheduler assumes it): the smaller of what warmup allocated and
    # --max-batch-total-tokens.
    capacity = min(scheduler.block_manager.num_blocks * scheduler.block_manager.block_size,
                   scheduler.config.max_batch_total_tokens)
    if capacity < config.max_total_tokens:
        logger.warning("the KV cache holds %d tokens, less than --max-total-tokens (%d): requests whose prompt + "
                       "max_new_tokens exceed %d will be rejected; raise --kv-cache-memory to serve them",
                       capacity, config.max_total_tokens, capacity)
    return Limits(max_input_tokens=config.max_input_tokens, max_total_tokens=config.max_total_tokens,
                  max_stop_sequences=config.args.max_stop_sequences, max_top_n_tokens=config.args.max_top_n_tokens,
                  kv_capacity_tokens=capacity, max_best_of=config.args.max_best_of,
                  max_client_batch_size=config.args.max_client_batch_size,
                  watermark=WatermarkParams(config.args.watermark_gamma, config.args.watermark_delta))


def build_info(config: LauncherConfig, model: ModelInfo, scheduler: Scheduler) -> Info:
    args = config.args
    return Info(model_id=args.model_id, model_dtype=f"torch.{model.dtype}", model_device_type=model.device_type,
                max_concurrent_requests=args.max_concurrent_requests, max_stop_sequences=args.max_stop_sequences,
                max_input_tokens=config.max_input_tokens, max_total_tokens=config.max_total_tokens,
                max_batch_total_tokens=scheduler.config.max_batch_total_tokens,
                max_batch_prefill_tokens=config.max_batch_prefill_tokens,
                waiting_served_ratio=args.waiting_served_ratio, max_waiting_tokens=args.max_waiting_tokens,
                max_batch_size=args.max_batch_size, max_best_of=args.max_best_of,
                speculate=config.speculation.num_tokens, speculation=config.speculation.method,
                max_client_batch_size=args.max_client_batch_size, num_shard=model.num_shards, version=_version())


def _version() -> str:
    try:
        return importlib.metadata.version("textgen")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+unknown"


def load_tokenizer(config: LauncherConfig):  # type: ignore[no-untyped-def]
    # transformers is imported here only: it is heavy, and config-only paths (tests, --help) do not need it.
    from transformers import AutoTokenizer

    # --trust-remote-code lets a repository's custom tokenizer class run; the model never runs repository code
    # (models/registry.py maps model_type to a built-in class).
    return AutoTokenizer.from_pretrained(str(config.model_path), trust_remote_code=config.args.trust_remote_code)


async def start_serving(config: LauncherConfig, state: RouterState, socket_paths: list[str],
                        tokenizer_task: asyncio.Future[Any]) -> asyncio.Task[None]:
    """Connects to the shards, warms them up, fills `state.serving` and starts the batching loop task.

    `tokenizer_task` is the tokenizer loading in a thread since before the shards started (transformers'
    import takes seconds; it overlaps with the model load)."""
    client = await ShardClient.connect(socket_paths)
    model = await client.info()
    state.metrics.warmup_started()
    warmup = await client.warmup(build_warmup_spec(config))
    state.metrics.warmup_done(warmup.duration_seconds)
    logger.info("warmup done in %.1f s: %d KV blocks of %d tokens", warmup.duration_seconds, warmup.num_blocks,
                warmup.block_size)
    scheduler = build_scheduler(config, warmup)
    # TGI's wording, which operators grep for.
    logger.info("Setting max batch total tokens to %d", scheduler.config.max_batch_total_tokens)
    tokenizer = await tokenizer_task
    batcher = Batcher(scheduler, client, tokenizer, eos_token_ids=frozenset(model.eos_token_ids),
                      metrics=state.metrics)
    grammar = build_grammar_service(config.args.disable_grammar_support, tokenizer, model.vocab_size,
                                    list(model.eos_token_ids))
    limits = dataclasses.replace(build_limits(config, scheduler), grammar=grammar)
    state.serving = Serving(batcher=batcher, tokenizer=tokenizer, limits=limits,
                            info=build_info(config, model, scheduler),
                            max_concurrent_requests=config.args.max_concurrent_requests)
    return asyncio.create_task(batcher.run(), name="batching-loop")
