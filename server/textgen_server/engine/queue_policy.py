"""QUEUE_THRESHOLD_MS: which waiting request is admitted next (pure; no torch).

TGI on Gaudi's queue (router/src/queue.rs, `QueueImpl`) keeps two heaps: requests waiting longer than the
threshold are "overdue" and always come first; within each group the shorter prompt comes first (padded batches
waste less on short prompts), ties broken by arrival. `admission_order` reproduces that order on plain data.

Preempted sequences are not part of it: they already hold generated tokens, and the scheduler keeps them at the
queue's front (a static-shape scheduler never preempts anyway, see engine/buckets.py).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedRequest:
    """What the policy needs of a waiting request."""

    request_id: int
    arrival_time: float      # seconds, on the same clock as `now` (time.monotonic in the scheduler)
    num_prompt_tokens: int


def is_overdue(request: QueuedRequest, now: float, threshold_ms: int) -> bool:
    """Strictly longer than the threshold, as tgi-gaudi's `elapsed() > overdue_threshold`."""
    return (now - request.arrival_time) * 1000.0 > threshold_ms


def admission_order(requests: Iterable[QueuedRequest], now: float, threshold_ms: int) -> list[int]:
    """Request ids, first to admit first: overdue before the rest; shorter prompts, then earlier arrivals, first."""
    def key(request: QueuedRequest) -> tuple[bool, int, float, int]:
        return (not is_overdue(request, now, threshold_ms), request.num_prompt_tokens, request.arrival_time,
                request.request_id)
    return [request.request_id for request in sorted(requests, key=key)]
