"""The batching loop: one asyncio task drives scheduler + shard, HTTP handlers submit and consume requests.

Each iteration is schedule -> (FilterBatch for requests the shard may forget) -> Prefill/Decode RPC ->
postprocess -> push token events to each request's queue. All engine state is touched only from the event
loop thread, so handlers may `submit`/`abort` at any time; the scheduler ignores generations of requests
aborted while their step was in flight.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

from textgen_server.engine.scheduler import Scheduler, ScheduledStep, SequenceUpdate
from textgen_server.engine.sequence import FinishReason, Sequence, SequenceStatus
from textgen_server.protocol import Generation, StepItem
from textgen_server.router.metrics import RequestTimings, ServerMetrics
from textgen_server.router.ops import current_request_id
from textgen_server.router.stream import RequestOutput, TokenEvent, Tokenizer
from textgen_server.router.validation import ValidRequest

logger = logging.getLogger(__name__)
# Event-loop turns a step call takes to put its request on the socket (see Batcher._deliver_after_send).
_TURNS_TO_SEND = 3


class StepClient(Protocol):
    """What the loop needs from the shard(s): textgen_server.router.client.ShardClient."""

    async def step(self, items: list[StepItem], is_prefill: bool) -> list[Generation]: ...

    async def filter(self, request_ids: list[int]) -> None: ...

    async def close(self) -> None: ...


class GenerationError(RuntimeError):
    """The shard failed while this request was running; answered 500 with error_type "generation"."""


@dataclass
class Counters:
    """Cumulative figures for logs, tests and (later) Prometheus metrics."""

    num_steps: int = 0
    num_prefill_steps: int = 0
    num_preemptions: int = 0
    num_generated_tokens: int = 0
    step_seconds: float = 0.0       # schedule + RPC + postprocess + delivery, as the loop sees it
    rpc_seconds: float = 0.0        # Prefill/Decode calls, including the shard's compute


@dataclass
class _Live:
    seq: Sequence
    output: RequestOutput
    queue: asyncio.Queue[TokenEvent | Exception] = field(default_factory=asyncio.Queue)
    num_prefill_chunks: int = 0      # steps that computed part of the prompt (more than 1 = chunked prefill)
    max_cached_tokens: int = 0       # longest prefix-cache hit over its admissions
    http_request_id: str | None = None   # the x-request-id of the HTTP request that submitted it (for logs)
    first_scheduled: float | None = None  # monotonic times, for metrics
    first_token: float | None = None
    last_token: float | None = None
    num_skipped_tokens: int = 0      # accepted speculative candidates (TGI's skipped tokens)


class Batcher:
    """Owns the scheduler and the running requests; `run()` is the loop task."""

    def __init__(self, scheduler: Scheduler, client: StepClient, tokenizer: Tokenizer,
                 eos_token_ids: frozenset[int], metrics: ServerMetrics | None = None) -> None:
        self.scheduler = scheduler
        self.metrics = metrics
        self.client = client
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.counters = Counters()
        self.broken: Exception | None = None
        self._live: dict[int, _Live] = {}
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._undelivered: list[SequenceUpdate] = []  # the last step's tokens, delivered during the next step

    @property
    def num_in_flight(self) -> int:
        return len(self._live)

    def submit(self, request: ValidRequest) -> tuple[int, AsyncGenerator[TokenEvent, None]]:
        """Queues a validated request; returns its id and the stream of its token events (last one final)."""
        if self.broken is not None:
            raise GenerationError(f"the shard is unavailable: {self.broken}")
        request_id = next(self._ids)
        seq = Sequence(request_id, request.prompt_ids, request.max_new_tokens, params=request.params,
                       eos_token_ids=() if request.ignore_eos else self.eos_token_ids, arrival_time=time.monotonic(),
                       # Prompt logprobs cost a full lm_head over the prompt and the prefix cache: only when shown.
                       want_prefill_logprobs=request.decoder_input_details and request.details)
        live = _Live(seq=seq, output=RequestOutput.start(request, self.tokenizer),
                     http_request_id=current_request_id())
        self._live[request_id] = live
        if self.metrics is not None:
            self.metrics.request_accepted(len(request.prompt_ids), request.max_new_tokens)
        self.scheduler.add(seq)
        self._idle.clear()
        self._wakeup.set()
        return request_id, self._events(request_id, live)

    def abort(self, request_id: int, reason: str = "cancelled") -> None:
        """Client gone (or, `reason` "no_tool", a tool call replaced by a text answer): drop the request (its
        blocks are freed, the shard forgets it at the next step); `reason` is the failure metric's `err`."""
        live = self._live.pop(request_id, None)
        if live is not None:
            self.scheduler.abort(request_id)
            self._mark_idle()
            if self.metrics is not None:
                self.metrics.request_failed(reason)
            logger.info("request %d ended (%s) after %d generated token(s)", request_id,
                        "cancelled by the client" if reason == "cancelled" else reason, len(live.output.tokens))

    def cancel_all(self, reason: str) -> int:
        """Ends every in-flight request with a GenerationError carrying `reason` (drain timeout); returns how many."""
        cancelled = list(self._live.items())
        for request_id, live in cancelled:
            self.scheduler.abort(request_id)
            if self.metrics is not None:
                self.metrics.request_failed("cancelled")
            live.queue.put_nowait(GenerationError(f"request {request_id}: {reason}"))
        self._live.clear()
        self._mark_idle()
        return len(cancelled)

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until no request is in flight; False when `timeout` seconds passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def run(self) -> None:
        """The loop: runs steps while there is work, sleeps otherwise. Ends only by cancellation or shard failure."""
        while True:
            if not self.scheduler.has_work():
                self._deliver_all(self._take_undelivered())  # e.g. the last running request was cancelled
                self._wakeup.clear()
                await self._wakeup.wait()
                # One loop turn before the first step: requests that arrived in the same burst (handlers already
                # runnable) join the first prefill instead of waiting for it to finish (lower TTFT under bursts).
                await asyncio.sleep(0)
                continue
            try:
                await self._run_step()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the shard is gone or broken: fail everyone, the launcher exits
                logger.exception("step failed; failing %d request(s)", len(self._live))
                self._fail_all(error)
                return

    def summary(self) -> str:
        """One line of cumulative figures (logged at shutdown; the benchmark reads it)."""
        c = self.counters
        shard = getattr(self.client, "shard_forward_seconds", float("nan"))
        return (f"steps={c.num_steps} prefill_steps={c.num_prefill_steps} generated_tokens={c.num_generated_tokens} "
                f"preemptions={c.num_preemptions} loop_step_seconds={c.step_seconds:.2f} "
                f"rpc_seconds={c.rpc_seconds:.2f} shard_forward_seconds={shard:.2f}")

    async def _run_step(self) -> None:
        started = time.perf_counter()
        try:
            await self._step_once()
        finally:
            self.counters.step_seconds += time.perf_counter() - started

    async def _step_once(self) -> None:
        step = self.scheduler.schedule()
        if step is None:
            self._deliver_all(self._take_undelivered())
            return
        self._note_step(step)
        method = "prefill" if step.is_prefill else "decode"
        finished = self.scheduler.take_finished_request_ids()
        if finished:
            started = time.perf_counter()
            await self.client.filter(finished)
            if self.metrics is not None:
                self.metrics.batch_filtered(method, time.perf_counter() - started)
        forward_before = getattr(self.client, "shard_forward_seconds", 0.0)
        started = time.perf_counter()
        call = asyncio.ensure_future(self.client.step(step.items, step.is_prefill))
        # The previous step's tokens reach their clients while the shard computes this step, instead of the
        # shard idling through detokenization and delivery. A stop sequence found there aborts its request
        # with this step in flight, exactly like a client disconnect: postprocess ignores that generation.
        delivery = asyncio.ensure_future(self._deliver_after_send(self._take_undelivered()))
        try:
            generations = await call
        except BaseException:
            call.cancel()
            if self.metrics is not None:
                self.metrics.batch_step(method, len(step.items), 0.0, 0.0, 0.0, success=False)
            raise
        finally:
            await delivery  # events stay in order: this step's updates go out after the previous step's
        rpc_done = time.perf_counter()
        self.counters.rpc_seconds += rpc_done - started
        self._undelivered = self.scheduler.postprocess(step, generations)
        self._note_speculation(step, generations)
        if not self.scheduler.has_work():  # no next step to overlap with: deliver now
            self._deliver_all(self._take_undelivered())
        if self.metrics is not None:
            forward = getattr(self.client, "shard_forward_seconds", 0.0) - forward_before
            self.metrics.batch_step(method, len(step.items), rpc_done - started, forward,
                                    time.perf_counter() - rpc_done, success=True)

    def _note_step(self, step: ScheduledStep) -> None:
        now = time.monotonic()
        for item, seq in zip(step.items, step.seqs):
            live = self._live.get(item.request_id)
            if live is not None and item.start_pos < seq.num_prompt_tokens:
                live.num_prefill_chunks += 1
                live.max_cached_tokens = max(live.max_cached_tokens, seq.num_cached_tokens)
            if live is not None and live.first_scheduled is None:
                live.first_scheduled = now
        if self.metrics is not None:
            _record_step_metrics(self.metrics, step)
        self.counters.num_steps += 1
        self.counters.num_prefill_steps += int(step.is_prefill)
        if step.preempted_request_ids:
            self.counters.num_preemptions += len(step.preempted_request_ids)
            logger.info("preempted %d request(s) for lack of KV blocks (ids %s); they will be recomputed "
                        "(total preemptions: %d)", len(step.preempted_request_ids), step.preempted_request_ids,
                        self.counters.num_preemptions)

    def _note_speculation(self, step: ScheduledStep, generations: list[Generation]) -> None:
        """Speculative candidates of the step: each Generation beyond one per sampling item is an accepted one."""
        num_proposed = sum(item.num_speculative for item in step.items)
        if not num_proposed:
            return
        per_request: dict[int, int] = {}
        for generation in generations:
            per_request[generation.request_id] = per_request.get(generation.request_id, -1) + 1
        for request_id, num_accepted in per_request.items():
            live = self._live.get(request_id)
            if live is not None:
                live.num_skipped_tokens += num_accepted
        if self.metrics is not None:
            self.metrics.speculated(num_proposed, len(generations) - step.num_sampled)

    def _take_undelivered(self) -> list[SequenceUpdate]:
        updates, self._undelivered = self._undelivered, []
        return updates

    async def _deliver_after_send(self, updates: list[SequenceUpdate]) -> None:
        # The step call needs a few loop turns (task -> per-rank call -> grpc's invoke task) before its request
        # is on the socket; delivering before that would keep the shard waiting for it.
        for _ in range(_TURNS_TO_SEND):
            await asyncio.sleep(0)
        self._deliver_all(updates)

    def _deliver_all(self, updates: list[SequenceUpdate]) -> None:
        for update in updates:
            self._deliver(update)

    def _deliver(self, update: SequenceUpdate) -> None:
        live = self._live.get(update.request_id)
        if live is None:  # aborted while its step was in flight
            return
        self.counters.num_generated_tokens += 1
        self._note_token(live)
        engine_finish = str(update.finish_reason) if update.finish_reason is not None else None
        event = live.output.push(update.generation, engine_finish)
        if event.finished is not None:
            if engine_finish is None:  # a stop sequence: the engine still considers it running
                self.scheduler.abort(update.request_id, FinishReason.STOP_SEQUENCE)
            del self._live[update.request_id]
            self._mark_idle()
            _log_done(live, event.finished.finish_reason)
            if self.metrics is not None:
                self.metrics.request_succeeded(_timings(live))
        live.queue.put_nowait(event)

    async def _events(self, request_id: int, live: _Live) -> AsyncGenerator[TokenEvent, None]:
        try:
            while True:
                event = await live.queue.get()
                if isinstance(event, Exception):
                    raise event
                yield event
                if event.finished is not None:
                    return
        finally:
            # Reached on normal end (no-op), on client disconnect (generator closed) and on errors.
            self.abort(request_id)

    def _fail_all(self, error: Exception) -> None:
        self.broken = error
        for request_id, live in list(self._live.items()):
            if self.metrics is not None:
                self.metrics.request_failed("generation")
            live.queue.put_nowait(GenerationError(f"request {request_id} failed: the shard step raised {error!r}"))
        self._live.clear()
        self._mark_idle()

    def _mark_idle(self) -> None:
        if not self._live:
            self._idle.set()

    def _note_token(self, live: _Live) -> None:
        now = time.monotonic()
        if live.first_token is None:
            live.first_token = now
        elif self.metrics is not None and live.last_token is not None:
            self.metrics.token_gap(now - live.last_token)
        live.last_token = now

    def gauge_values(self) -> dict[str, float]:
        """Engine state for /metrics (read at scrape time, from the event loop thread)."""
        blocks = self.scheduler.block_manager
        running = [live.seq for live in self._live.values() if live.seq.status is SequenceStatus.RUNNING]
        return {"tgi_queue_size": float(self.scheduler.num_waiting),
                "tgi_batch_current_size": float(self.scheduler.num_running),
                "tgi_batch_current_max_tokens": float(sum(seq.num_prompt_tokens + seq.max_new_tokens
                                                          for seq in running)),
                "tgi_request_in_flight": float(len(self._live)),
                "tgi_kv_cache_usage_ratio": blocks.usage(),
                "tgi_kv_cache_blocks_used": float(blocks.num_used_blocks),
                "tgi_kv_cache_num_blocks": float(blocks.num_blocks),
                "tgi_kv_cache_blocks_cached": float(blocks.num_cached_blocks)}


def _record_step_metrics(metrics: ServerMetrics, step: ScheduledStep) -> None:
    # The first item since a (re)admission carries params; its start_pos is the prefix-cache hit length.
    for item, seq in zip(step.items, step.seqs):
        if item.params is not None:
            metrics.prefix_cache_hit(item.start_pos)
            metrics.prompt_tokens_scheduled(seq.num_tokens)
    if step.admitted_request_ids and any(item.start_pos >= seq.num_prompt_tokens
                                         for item, seq in zip(step.items, step.seqs)):
        metrics.batch_concat()
    if step.preempted_request_ids:
        metrics.preempted(len(step.preempted_request_ids))


def _timings(live: _Live) -> RequestTimings:
    return RequestTimings(arrival=live.seq.arrival_time, first_scheduled=live.first_scheduled,
                          first_token=live.first_token, finished=time.monotonic(),
                          num_input_tokens=live.seq.num_prompt_tokens, num_generated_tokens=len(live.output.tokens),
                          num_skipped_tokens=live.num_skipped_tokens)


def _log_done(live: _Live, finish_reason: str) -> None:
    # One line per request, like TGI's "Success" line; tests read cached_tokens and prefill_chunks from it.
    seq = live.seq
    logger.info("request %d done: finish_reason=%s prompt_tokens=%d generated_tokens=%d cached_tokens=%d "
                "prefill_chunks=%d preemptions=%d time=%.3fs", seq.request_id, finish_reason, seq.num_prompt_tokens,
                len(live.output.tokens), live.max_cached_tokens, live.num_prefill_chunks, seq.num_preemptions,
                time.monotonic() - seq.arrival_time, extra={"request_id": live.http_request_id})
