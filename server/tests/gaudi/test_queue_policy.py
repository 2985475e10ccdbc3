"""QUEUE_THRESHOLD_MS (engine/queue_policy.py): overdue requests first, then shorter prompts, then arrival."""
from __future__ import annotations

import pytest

from textgen_server.engine.queue_policy import QueuedRequest, admission_order, is_overdue

NOW = 100.0


def req(request_id: int, waited_ms: float, num_prompt_tokens: int) -> QueuedRequest:
    return QueuedRequest(request_id, NOW - waited_ms / 1000.0, num_prompt_tokens)


@pytest.mark.parametrize("waited_ms,threshold_ms,expected", [
    (0, 120, False), (119, 120, False), (121, 120, True), (1, 0, True), (0, 0, False)])
def test_is_overdue_is_strictly_longer_than_the_threshold(waited_ms: float, threshold_ms: int,
                                                         expected: bool) -> None:
    assert is_overdue(req(0, waited_ms, 10), NOW, threshold_ms) is expected


@pytest.mark.parametrize("requests,threshold_ms,expected", [
    # nobody overdue: shortest prompt first, ties by arrival (the longer wait first)
    ([req(1, 10, 300), req(2, 20, 50), req(3, 5, 50)], 120, [2, 3, 1]),
    # an overdue long prompt overtakes fresh short ones
    ([req(1, 500, 900), req(2, 10, 5), req(3, 20, 7)], 120, [1, 2, 3]),
    # several overdue: shortest among them first, then the fresh ones by length
    ([req(1, 500, 900), req(2, 300, 100), req(3, 10, 5), req(4, 200, 100)], 120, [2, 4, 1, 3]),
    # threshold 0: everyone who waited at all is overdue -> plain shortest-first among them
    ([req(1, 1, 30), req(2, 2, 10)], 0, [2, 1]),
    # a huge threshold: pure shortest-first
    ([req(1, 9_000, 30), req(2, 1, 10)], 10**9, [2, 1]),
    ([], 120, []),
])
def test_admission_order(requests: list[QueuedRequest], threshold_ms: int, expected: list[int]) -> None:
    assert admission_order(requests, NOW, threshold_ms) == expected


def test_same_length_same_arrival_falls_back_to_request_id() -> None:
    assert admission_order([req(7, 10, 5), req(3, 10, 5)], NOW, 120) == [3, 7]


def test_a_waiting_request_becomes_overdue_as_time_passes() -> None:
    long_prompt, short_prompt = QueuedRequest(1, 0.0, 1000), QueuedRequest(2, 0.1, 10)
    assert admission_order([long_prompt, short_prompt], now=0.1, threshold_ms=120) == [2, 1]
    assert admission_order([long_prompt, short_prompt], now=0.2, threshold_ms=120) == [1, 2]
