"""What the scheduler is configured with and what it hands the router: plain frozen data (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

from textgen_server.engine.buckets import BucketConfig
from textgen_server.engine.sequence import FinishReason, Sequence
from textgen_server.protocol import Generation, StepItem


@dataclass(frozen=True)
class SchedulerConfig:
    """Batching limits, with TGI's launcher flag names and defaults."""

    max_batch_prefill_tokens: int
    max_batch_total_tokens: int
    max_batch_size: int | None = None
    waiting_served_ratio: float = 0.3
    max_waiting_tokens: int = 20
    block_size: int = 16
    # QUEUE_THRESHOLD_MS (TGI on Gaudi, engine/queue_policy.py): None keeps TGI's FIFO admission; a number admits
    # overdue requests first, then shorter prompts (the launcher sets it on hpu only).
    queue_threshold_ms: int | None = None
    # Static shapes (engine/buckets.py, shard/static_runner.py): prefill groups within the bucket limits, chunks of
    # at most max_input_tokens, batches of at most buckets.max_batch_size. None: no shape constraint.
    buckets: BucketConfig | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_prefill_tokens", "max_batch_total_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SchedulerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.queue_threshold_ms is not None and self.queue_threshold_ms < 0:
            raise ValueError(f"SchedulerConfig.queue_threshold_ms must be >= 0 or None, got {self.queue_threshold_ms}")
        if self.max_waiting_tokens < 0:  # 0 is TGI's "waiting requests may join at every step"
            raise ValueError(f"SchedulerConfig.max_waiting_tokens must be >= 0, got {self.max_waiting_tokens}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ValueError(f"SchedulerConfig.max_batch_size must be >= 1 or None, got {self.max_batch_size}")
        if self.waiting_served_ratio < 0:
            raise ValueError(
                f"SchedulerConfig.waiting_served_ratio must be >= 0, got {self.waiting_served_ratio}"
            )


@dataclass(frozen=True)
class ScheduledStep:
    """One step to run: `items` go to the shard; `seqs[i]` computes `items[i]` (same order)."""

    items: list[StepItem]
    seqs: list[Sequence]
    is_prefill: bool                  # send as Prefill (any multi-token or first item), else Decode
    num_prefill_tokens: int           # tokens computed by prompt chunks / recomputation in this step
    preempted_request_ids: list[int] = field(default_factory=list)
    admitted_request_ids: list[int] = field(default_factory=list)

    @property
    def num_sampled(self) -> int:
        return sum(1 for item in self.items if item.sample)


@dataclass(frozen=True)
class SequenceUpdate:
    """What the router streams for one sampled token: the token (with logprobs) and whether it ended the request."""

    request_id: int
    generation: Generation
    finish_reason: FinishReason | None

    @property
    def token_id(self) -> int:
        return self.generation.token.id
