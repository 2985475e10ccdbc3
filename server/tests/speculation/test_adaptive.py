"""The adaptive rule (speculation/adaptive.py): fewer candidates at low acceptance and in large batches, probes
again after a while, and, on the real engine, a proposer that is always wrong stops costing verify positions
while the output stays exact."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from spec_testlib import EngineRun, Job, random_prompts
from textgen_server.speculation.adaptive import Acceptance, AcceptanceTracker, min_gain, num_candidates


def test_candidates_follow_acceptance_and_batch_size() -> None:
    assert min_gain(1) == 0.05 and min_gain(8) == 0.4 and min_gain(64) == 0.9
    assert num_candidates(0.5, min_gain(1), 4) == 4            # 0.5^4 = 0.06 >= 0.05
    assert num_candidates(0.5, min_gain(8), 4) == 1            # 0.5 >= 0.4 > 0.25
    assert num_candidates(0.9, min_gain(8), 4) == 4            # 0.9^4 = 0.66
    assert num_candidates(0.3, min_gain(8), 4) == 0
    assert num_candidates(0.3, min_gain(1), 4) == 2            # 0.09 >= 0.05 > 0.027
    assert num_candidates(1.0, min_gain(64), 3) == 3           # never above the proposer's own count


def test_estimate_falls_on_rejections_rises_on_acceptance_and_drifts_back() -> None:
    acceptance = Acceptance()
    assert acceptance.rate == 0.5
    for _ in range(10):
        acceptance.update(3, 0)                      # every first candidate rejected
    assert acceptance.rate < 0.2 and num_candidates(acceptance.rate, min_gain(8), 3) == 0
    steps_to_probe = 0
    while num_candidates(acceptance.rate, min_gain(8), 3) == 0:
        acceptance.update(0, 0)                      # nothing proposed: the evidence fades
        steps_to_probe += 1
    assert 5 <= steps_to_probe <= 15
    for _ in range(10):
        acceptance.update(3, 3)
    assert acceptance.rate > 0.85 and num_candidates(acceptance.rate, min_gain(8), 3) == 3


def test_tracker_forgets_requests() -> None:
    tracker = AcceptanceTracker()
    for _ in range(10):
        tracker.update(7, 2, 0)
    assert tracker.limit(7, 8, 2) == 0 and tracker.limit(8, 8, 2) == 1
    tracker.forget(7)
    assert tracker.limit(7, 8, 2) == 1
    assert AcceptanceTracker(min_gain_per_row=0.0).limit(7, 400, 3) == 3  # the rule off


class WrongProposer:
    """A test double for a proposer whose every candidate is rejected (an untrained Medusa head on text it has
    never seen): it proposes the token after the model's greedy choice could never be, a fixed id 0."""

    method = "wrong"

    def __init__(self, num_tokens: int) -> None:
        self.num_tokens = num_tokens

    def propose(self, histories: Sequence[Sequence[int]], hidden: torch.Tensor) -> list[list[int]]:
        return [[0] * self.num_tokens for _ in histories]


def test_always_wrong_proposals_stop_in_a_batch_and_output_stays_exact(repetitive_model_dir) -> None:
    model_dir: Path = repetitive_model_dir("llama")
    jobs = [Job(prompt, 40) for prompt in random_prompts(8, 16, 700, seed=5)]
    plain = EngineRun(model_dir, speculate=0).run(jobs)
    assert all(0 not in output for output in plain.outputs)  # so every candidate 0 is rejected
    engine = EngineRun(model_dir, speculate=3)
    engine.runner.proposer = WrongProposer(3)
    result = engine.run(jobs)
    assert result.outputs == plain.outputs and result.num_accepted == 0
    # Without the rule: 3 candidates per request per decode step (~8 x 39 x 3 = 936). With it, each request
    # proposes 1 at the start (prior 0.5 at batch 8), stops after a couple of rejections and probes every ~10 steps.
    assert 0 < result.num_proposed < 150, result.num_proposed
