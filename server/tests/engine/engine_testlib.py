"""Helpers shared by the engine tests (plain functions; no torch, no model)."""
from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

from textgen_server.engine import BlockManager, ScheduledStep, Scheduler, SchedulerConfig, Sequence, SequenceUpdate
from textgen_server.protocol import Generation, SamplingParams, Token

TokenFn = Callable[[int, int], int]


def tokens(num_tokens: int, base: int = 1000) -> list[int]:
    """Distinct, recognisable token ids base, base+1, ..."""
    return list(range(base, base + num_tokens))


def make_seq(
    request_id: int,
    prompt: Seq[int] | int,
    max_new_tokens: int = 8,
    eos_token_ids: Seq[int] = (),
    params: SamplingParams | None = None,
) -> Sequence:
    prompt_ids = tokens(prompt, base=1000 * (request_id + 1)) if isinstance(prompt, int) else list(prompt)
    return Sequence(request_id, prompt_ids, max_new_tokens, params=params, eos_token_ids=eos_token_ids)


def make_scheduler(
    num_blocks: int = 64,
    block_size: int = 4,
    max_batch_prefill_tokens: int = 1000,
    max_batch_total_tokens: int = 100_000,
    max_batch_size: int | None = None,
    waiting_served_ratio: float = 0.0,
    max_waiting_tokens: int = 20,
    enable_prefix_caching: bool = True,
) -> Scheduler:
    config = SchedulerConfig(
        max_batch_prefill_tokens=max_batch_prefill_tokens,
        max_batch_total_tokens=max_batch_total_tokens,
        max_batch_size=max_batch_size,
        waiting_served_ratio=waiting_served_ratio,
        max_waiting_tokens=max_waiting_tokens,
        block_size=block_size,
    )
    return Scheduler(config, BlockManager(num_blocks, block_size, enable_prefix_caching))


def default_token(request_id: int, position: int) -> int:
    """A token that depends only on (request, position): what a deterministic model would sample there."""
    return 7 + (request_id * 7919 + position * 31) % 50_000


def generations_for(step: ScheduledStep, token_fn: TokenFn = default_token) -> list[Generation]:
    """One Generation per sampled item: the token for the position right after the item's last one."""
    return [
        Generation(item.request_id, Token(token_fn(item.request_id, item.start_pos + len(item.token_ids)), -0.5))
        for item in step.items
        if item.sample
    ]


def run_step(scheduler: Scheduler, token_fn: TokenFn = default_token) -> tuple[ScheduledStep, list[SequenceUpdate]]:
    step = scheduler.schedule()
    assert step is not None, "expected work to schedule"
    return step, scheduler.postprocess(step, generations_for(step, token_fn))


def item_summary(step: ScheduledStep) -> list[tuple[int, int, int, bool]]:
    """(request_id, start_pos, num_tokens, sample) per item: compact to compare in tables."""
    return [(item.request_id, item.start_pos, len(item.token_ids), item.sample) for item in step.items]


def run_until_idle(scheduler: Scheduler, max_steps: int = 10_000) -> list[SequenceUpdate]:
    updates: list[SequenceUpdate] = []
    for _ in range(max_steps):
        if not scheduler.has_work():
            return updates
        updates += run_step(scheduler)[1]
        scheduler.take_finished_request_ids()
    raise AssertionError(f"scheduler still busy after {max_steps} steps")
