"""Continuous batching with chunked prefill and preemption by recompute (no torch).

Each `schedule()` builds one step, a list of StepItems for the shard:
1. running sequences in decode get one token each; when a new KV block is missing, the NEWEST running
   sequences are preempted (blocks freed, put back at the front of the queue, tokens kept) until it fits;
2. running sequences with an unfinished prompt continue their prefill within the step's prefill budget;
3. waiting sequences are admitted in FIFO order within the prefill budget, the batch size, the total-token
   budget and the free KV blocks; the last one may get only a chunk of its prompt.
Admission into a running batch follows TGI's router (backends/v3 batching_task + queue.next_batch): new
sequences join only if at least floor(num_running * waiting_served_ratio) of them can join at once, unless
the running batch has produced max_waiting_tokens steps since the last admission; the rest of a group that the
prefill budget cut short joins at the next steps without that check (engine/admission.py).
`postprocess(step, generations)` then advances the sequences, appends sampled tokens and finishes them.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from textgen_server.engine.admission import AdmissionState, after_step, min_group_size
from textgen_server.engine.block_manager import BlockManager
from textgen_server.engine.buckets import max_prefill_batch, sequence_bucket
from textgen_server.engine.queue_policy import QueuedRequest, admission_order
from textgen_server.engine.sequence import FinishReason, Sequence, SequenceStatus
from textgen_server.engine.speculative import fit_candidates, group_generations
# Re-exported: the router imports these from here.
from textgen_server.engine.step import ScheduledStep as ScheduledStep
from textgen_server.engine.step import SchedulerConfig as SchedulerConfig
from textgen_server.engine.step import SequenceUpdate as SequenceUpdate
from textgen_server.protocol import Generation, StepItem


@dataclass
class _StepPlan:
    """The mutable draft of a step while schedule() builds it."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    candidates: list[list[int]] = field(default_factory=list)   # speculative tokens after the new ones
    prefill_budget: int = 0
    num_running_tokens: int = 0
    preempted: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)
    budget_ran_out: bool = False    # admission stopped at the prefill budget (a cut group continues next step)

    def add(self, seq: Sequence, num_tokens: int, candidates: list[int] | None = None) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(num_tokens)
        self.candidates.append(candidates or [])


class Scheduler:
    """Decides, step by step, which tokens of which sequences the shard computes; keeps KV blocks in step."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        if config.block_size != block_manager.block_size:
            raise ValueError(
                f"SchedulerConfig.block_size={config.block_size} differs from the BlockManager's"
                f" block_size={block_manager.block_size}; build both from the shard's warmup result"
            )
        self.config = config
        self.block_manager = block_manager
        # Both keyed by request id, in order: waiting is FIFO (preempted ones moved to the front), running is
        # oldest-admitted first, so the newest (the preemption victim) is popped from the end in O(1).
        self._waiting: OrderedDict[int, Sequence] = OrderedDict()
        self._running: OrderedDict[int, Sequence] = OrderedDict()
        # TGI's `waiting_tokens` and whether the last admitted group was cut by the prefill budget.
        self._admission = AdmissionState()
        # Requests whose shard-side state may be dropped (finished, aborted, preempted); the router drains
        # this after each step and calls the shard's FilterBatch before sending the next step.
        self.finished_request_ids: list[int] = []

    # ---- queue ------------------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """Queues a new request (the router already checked that it fits the KV cache alone)."""
        if seq.request_id in self._waiting or seq.request_id in self._running:
            raise ValueError(f"request id {seq.request_id} is already scheduled; ids must be unique")
        if seq.status is not SequenceStatus.WAITING or seq.block_ids:
            raise ValueError(f"add: {seq!r} must be a fresh WAITING sequence without blocks")
        self._waiting[seq.request_id] = seq

    def abort(self, request_id: int, reason: FinishReason | None = None) -> bool:
        """Drops a waiting or running request and frees its blocks; False when it is not scheduled here.

        For client disconnects and stop sequences. A generation still in flight for it is ignored later.
        """
        seq = self._waiting.pop(request_id, None)
        if seq is None:
            seq = self._running.pop(request_id, None)
            if seq is None:
                return False
            self.finished_request_ids.append(request_id)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        return True

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def kv_usage(self) -> float:
        """Fraction of KV blocks held by sequences (cached-but-free blocks count as free)."""
        return self.block_manager.usage()

    def take_finished_request_ids(self) -> list[int]:
        """Returns and clears the ids whose shard state may be dropped (finished, aborted or preempted)."""
        ids, self.finished_request_ids = self.finished_request_ids, []
        return ids

    # ---- schedule ---------------------------------------------------------------------------------------
    def schedule(self) -> ScheduledStep | None:
        """Builds the next step, or returns None when there is nothing to run."""
        if not self.has_work():
            return None
        plan = _StepPlan(prefill_budget=self.config.max_batch_prefill_tokens)
        self._schedule_running(plan)
        if not plan.preempted:
            # Just-preempted sequences cannot fit this step; TGI's rule decides whether others join now.
            self._admit_waiting(plan)
        self._admission = after_step(self._admission, len(plan.admitted), len(self._waiting), plan.budget_ran_out)
        if not plan.seqs:
            # Only possible when the queue head cannot fit even an empty cache: a validation gap upstream.
            raise RuntimeError(
                f"nothing can be scheduled although requests wait ({self._describe()}): the first waiting"
                " request does not fit the KV cache alone; the router must reject requests whose prompt +"
                " max_new_tokens exceed the cache"
            )
        return self._build_step(plan)

    def _schedule_running(self, plan: _StepPlan) -> None:
        """Gives every running sequence its next tokens, preempting the newest ones when blocks run out."""
        for seq in list(self._running.values()):
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            if seq.num_uncomputed_tokens > 1:
                self._continue_prefill(seq, plan)
            elif self._make_room(seq, plan):
                # Speculative candidates take only blocks that are free after the last token's own.
                candidates = fit_candidates(seq, self.block_manager)
                self.block_manager.append(seq, len(candidates))
                plan.add(seq, 1, candidates)
                plan.num_running_tokens += len(candidates)
            if seq.status is SequenceStatus.RUNNING:
                plan.num_running_tokens += seq.num_tokens

    def _continue_prefill(self, seq: Sequence, plan: _StepPlan) -> None:
        num_tokens = self._prefill_chunk(seq, plan)
        if num_tokens > 0:
            plan.prefill_budget -= num_tokens
            plan.add(seq, num_tokens)

    def _prefill_chunk(self, seq: Sequence, plan: _StepPlan) -> int:
        """Prompt tokens `seq` may compute this step; with static shapes 0 when its chunk would take the step's
        prefill group out of the bucket limits (it waits a step), and never more than max_input_tokens."""
        num_tokens = min(seq.num_uncomputed_tokens, plan.prefill_budget)
        buckets = self.config.buckets
        if buckets is None or num_tokens <= 1:
            return num_tokens
        num_tokens = min(num_tokens, buckets.max_input_tokens)
        lengths = [n for n in plan.num_new_tokens if n > 1] + [num_tokens]
        fits = len(lengths) <= max_prefill_batch(buckets, sequence_bucket(buckets, max(lengths)))
        return num_tokens if fits else 0

    def _make_room(self, seq: Sequence, plan: _StepPlan) -> bool:
        """Preempts the newest running sequences until `seq` can grow; False if `seq` itself was preempted."""
        while not self.block_manager.can_append(seq):
            victim = next(reversed(self._running.values()))
            if victim is seq and len(self._running) == 1:
                raise RuntimeError(
                    f"{seq!r} does not fit the KV cache alone ({self.block_manager.num_blocks} blocks of"
                    f" {self.block_manager.block_size}); the router must reject requests whose prompt +"
                    " max_new_tokens exceed the cache"
                )
            self._preempt(victim, plan)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence, plan: _StepPlan) -> None:
        """Recompute-style preemption: drop the KV blocks, keep every token, requeue at the front."""
        del self._running[seq.request_id]
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        seq.speculative_ids = []
        self._waiting[seq.request_id] = seq
        self._waiting.move_to_end(seq.request_id, last=False)
        self.finished_request_ids.append(seq.request_id)
        plan.preempted.append(seq)

    # ---- admission --------------------------------------------------------------------------------------
    def _admit_waiting(self, plan: _StepPlan) -> None:
        min_size = self._min_admission_size()
        if len(self._waiting) < max(min_size, 1):
            return
        num_items_before, budget_before = len(plan.seqs), plan.prefill_budget
        for seq in self._waiting_in_admission_order():
            if not self._can_admit(seq, plan):
                plan.budget_ran_out = self._out_of_prefill_budget(seq, plan)
                break
            del self._waiting[seq.request_id]
            self._admit(seq, plan)
        if len(plan.admitted) < min_size:
            self._undo_admissions(plan)
            del plan.seqs[num_items_before:], plan.num_new_tokens[num_items_before:]
            del plan.candidates[num_items_before:]
            plan.prefill_budget = budget_before
            plan.budget_ran_out = False

    def _waiting_in_admission_order(self) -> list[Sequence]:
        """FIFO (TGI), or with queue_threshold_ms TGI on Gaudi's order: preempted sequences (they hold generated
        tokens) first as queued, then overdue requests, then shorter prompts (engine/queue_policy.py)."""
        seqs = list(self._waiting.values())
        if self.config.queue_threshold_ms is None:
            return seqs
        fresh = {seq.request_id: seq for seq in seqs if seq.num_preemptions == 0}
        queued = [QueuedRequest(seq.request_id, seq.arrival_time, seq.num_prompt_tokens) for seq in fresh.values()]
        order = admission_order(queued, time.monotonic(), self.config.queue_threshold_ms)
        return [seq for seq in seqs if seq.num_preemptions > 0] + [fresh[request_id] for request_id in order]

    def _min_admission_size(self) -> int:
        """TGI's rule: with a batch running, join only in groups of floor(batch * ratio), unless it waited long
        or the group is the rest of one the prefill budget cut short."""
        config = self.config
        return min_group_size(self._admission, len(self._running), config.waiting_served_ratio,
                              config.max_waiting_tokens)

    def _out_of_prefill_budget(self, seq: Sequence, plan: _StepPlan) -> bool:
        """Whether this step's prefill budget (with static shapes: its prefill shape) is what keeps `seq` out."""
        return plan.prefill_budget <= 0 or (self.config.buckets is not None and self._prefill_chunk(seq, plan) == 0)

    def _can_admit(self, seq: Sequence, plan: _StepPlan) -> bool:
        config = self.config
        if plan.prefill_budget <= 0:
            return False
        # With static shapes the buckets' batch bound holds too (derived from --max-batch-total-tokens when unset).
        limits = [n for n in (config.max_batch_size, config.buckets and config.buckets.max_batch_size) if n]
        if limits and len(self._running) >= min(limits):
            return False
        if config.buckets is not None and self._prefill_chunk(seq, plan) == 0:
            return False
        # A request longer than the total budget may still run alone; otherwise it would wait forever.
        batch_is_empty = not self._running
        if not batch_is_empty and plan.num_running_tokens + seq.num_tokens > config.max_batch_total_tokens:
            return False
        return self.block_manager.can_allocate(seq)

    def _admit(self, seq: Sequence, plan: _StepPlan) -> None:
        self.block_manager.allocate(seq)
        seq.status = SequenceStatus.RUNNING
        seq.needs_params = True
        self._running[seq.request_id] = seq
        plan.admitted.append(seq)
        plan.num_running_tokens += seq.num_tokens
        self._continue_prefill(seq, plan)

    def _undo_admissions(self, plan: _StepPlan) -> None:
        """Puts back a group too small for TGI's ratio rule, in its original order at the queue front."""
        for seq in reversed(plan.admitted):
            del self._running[seq.request_id]
            self.block_manager.free(seq)
            seq.status = SequenceStatus.WAITING
            seq.needs_params = False
            self._waiting[seq.request_id] = seq
            self._waiting.move_to_end(seq.request_id, last=False)
            plan.num_running_tokens -= seq.num_tokens
        plan.admitted = []

    # ---- step building ------------------------------------------------------------------------------------
    def _build_step(self, plan: _StepPlan) -> ScheduledStep:
        items = [self._build_item(seq, n, c) for seq, n, c in zip(plan.seqs, plan.num_new_tokens, plan.candidates)]
        num_prefill_tokens = self.config.max_batch_prefill_tokens - plan.prefill_budget
        is_prefill = any(len(item.token_ids) - item.num_speculative > 1 or item.params is not None for item in items)
        return ScheduledStep(
            items=items,
            seqs=list(plan.seqs),
            is_prefill=is_prefill,
            num_prefill_tokens=num_prefill_tokens,
            preempted_request_ids=[seq.request_id for seq in plan.preempted],
            admitted_request_ids=[seq.request_id for seq in plan.admitted],
        )

    @staticmethod
    def _build_item(seq: Sequence, num_tokens: int, candidates: list[int]) -> StepItem:
        start = seq.num_computed_tokens
        end = start + num_tokens
        first = seq.needs_params
        seq.needs_params = False
        return StepItem(
            request_id=seq.request_id,
            token_ids=seq.token_ids[start:end] + candidates,
            start_pos=start,
            block_ids=list(seq.block_ids),
            sample=end == seq.num_tokens,
            params=seq.params if first else None,
            prefix_token_ids=seq.token_ids[:start] if first else [],
            num_prompt_tokens=seq.num_prompt_tokens if first else 0,
            prefill_logprobs=seq.needs_prefill_logprobs,
            num_speculative=len(candidates),
        )

    # ---- postprocess --------------------------------------------------------------------------------------
    def postprocess(self, step: ScheduledStep, generations: list[Generation]) -> list[SequenceUpdate]:
        """Applies a finished step: advances sequences, appends sampled tokens, finishes and frees them.

        `generations` holds, in item order, one Generation per item with sample=True, followed for a speculative
        item by one per accepted candidate (the shard's contract). Sequences aborted while the step was in flight
        are skipped.
        """
        updates: list[SequenceUpdate] = []
        for item, seq, group in zip(step.items, step.seqs, group_generations(step.items, generations)):
            if seq.status is not SequenceStatus.RUNNING:
                continue
            # The item's tokens and the accepted candidates are in the KV cache; rejected slots are overwritten later.
            num_computed = len(item.token_ids) - item.num_speculative + max(0, len(group) - 1)
            reason: FinishReason | None = None
            for generation in group:
                seq.token_ids.append(generation.token.id)
                reason = seq.finish_reason_after(generation.token.id)
                updates.append(SequenceUpdate(seq.request_id, generation, reason))
                if reason is not None:
                    break
            # Before finishing: a finished sequence's computed full blocks stay in the prefix cache.
            seq.num_computed_tokens = min(seq.num_computed_tokens + num_computed, seq.num_tokens)
            self.block_manager.register_computed_blocks(seq)
            if reason is not None:
                self._finish(seq, reason)
            elif group:
                seq.speculative_ids = list(group[-1].speculative_ids)
        return updates

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        del self._running[seq.request_id]
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.finished_request_ids.append(seq.request_id)

    def _describe(self) -> str:
        return (
            f"{self.num_running} running, {self.num_waiting} waiting,"
            f" {self.block_manager.num_free_blocks}/{self.block_manager.num_blocks} blocks free"
        )

