"""The adaptive rule (speculation/adaptive.py): fewer candidates at low acceptance and in large batches, probes
again after a while, and, on the real engine, a proposer that is always wrong stops costing verify positions
while the output stays exact."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from spec_testlib import EngineRun, Job, random_prompts
from textgen_server.shard.verify_cost import monotone, verify_items
from textgen_server.speculation.adaptive import (Acceptance, AcceptanceTracker, StepCosts, best_candidates, min_gain,
                                                 num_candidates)

# This CPU's shape (float32 matmuls switch kernels at 4+ rows): 4 candidates (5 query tokens) cost ~1.5x at batch 1.
CPU_COSTS = StepCosts({1: (28.3, 29.0, 30.0, 43.5, 44.7), 8: (60.0, 78.0, 96.0, 114.0, 132.0)})


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


def test_cost_aware_choice_stops_before_the_expensive_step_and_proposes_when_costs_are_flat() -> None:
    batch1 = CPU_COSTS.relative(1)
    assert batch1[0] == 1.0 and abs(batch1[3] - 43.5 / 28.3) < 1e-9
    assert best_candidates(0.8, batch1, 4) == 2      # 2.44 / 1.06 beats 3.36 / 1.58: not 4
    assert best_candidates(0.99, batch1, 4) == 4     # near-certain candidates still pay the 1.58x step
    assert best_candidates(0.8, batch1, 1) == 1      # never above the proposer's own count
    flat = (1.0, 1.0, 1.0, 1.0, 1.0)                 # a GPU bound by reading the weights
    assert best_candidates(0.8, flat, 4) == 4 and best_candidates(0.1, flat, 4) == 4
    assert best_candidates(0.0, flat, 4) == 0        # nothing expected: same speed, less work
    # Batch 8: each candidate costs 0.3x a plain step, so it needs a chance of acceptance above ~0.3.
    assert CPU_COSTS.relative(8) == CPU_COSTS.relative(64) and CPU_COSTS.relative(3) == batch1
    assert best_candidates(0.5, CPU_COSTS.relative(8), 4) == 1 and best_candidates(0.2, CPU_COSTS.relative(8), 4) == 0


def test_tracker_uses_measured_costs_once_warmup_set_them() -> None:
    tracker = AcceptanceTracker()
    for _ in range(10):
        tracker.update(7, 4, 4)                      # rate ~0.92
    assert tracker.limit(7, 1, 4) == 4               # the bar rule: 0.92^4 >= 0.05
    tracker.costs = StepCosts({1: (1.0, 1.0, 1.0, 10.0, 10.0)})
    assert tracker.limit(7, 1, 4) == 2               # a 10x step for 3+ candidates never pays
    tracker.min_gain_per_row = 0.0
    assert tracker.limit(7, 1, 4) == 4               # the off switch wins over costs


def test_measurement_items_and_noise_floor() -> None:
    items = verify_items(8, 3, 5, num_blocks=100, block_size=16)
    assert items is not None and len(items) == 8
    assert all(len(i.token_ids) == 3 and i.num_speculative == 2 and len(i.block_ids) == 5 for i in items)
    assert len({b for i in items for b in i.block_ids}) == 40      # rows never share a block
    assert verify_items(8, 3, 5, num_blocks=39, block_size=16) is None
    assert monotone([3.0, 2.0, 4.0, 3.5]) == (3.0, 3.0, 4.0, 4.0)


def test_warmup_with_speculation_measures_costs(repetitive_model_dir) -> None:
    engine = EngineRun(repetitive_model_dir("llama"), speculate=3)
    costs = engine.runner.acceptance.costs
    assert costs is not None and sorted(costs.by_batch) == [1, 8]
    assert all(len(c) == 4 and all(s > 0 for s in c) and list(c) == sorted(c) for c in costs.by_batch.values())
    assert EngineRun(repetitive_model_dir("llama"), speculate=0).runner.acceptance.costs is None


class WrongProposer:
    """A test double for a proposer whose every candidate is rejected (an untrained Medusa head on text it has
    never seen): it proposes the token after the model's greedy choice could never be, a fixed id 0."""

    method = "wrong"

    def __init__(self, num_tokens: int) -> None:
        self.num_tokens = num_tokens

    def propose(self, histories: Sequence[Sequence[int]], hidden: torch.Tensor) -> list[list[int]]:
        return [[0] * self.num_tokens for _ in histories]


@pytest.mark.parametrize("costs", [None, CPU_COSTS], ids=["bar-rule", "cpu-costs"])
def test_always_wrong_proposals_stop_in_a_batch_and_output_stays_exact(repetitive_model_dir,
                                                                       costs: StepCosts | None) -> None:
    model_dir: Path = repetitive_model_dir("llama")
    jobs = [Job(prompt, 40) for prompt in random_prompts(8, 16, 700, seed=5)]
    plain = EngineRun(model_dir, speculate=0).run(jobs)
    assert all(0 not in output for output in plain.outputs)  # so every candidate 0 is rejected
    engine = EngineRun(model_dir, speculate=3)
    engine.runner.proposer = WrongProposer(3)
    engine.runner.acceptance.costs = costs  # the tiny model's measured costs are flat: every candidate would pay
    result = engine.run(jobs)
    assert result.outputs == plain.outputs and result.num_accepted == 0
    # Without the rule: 3 candidates per request per decode step (~8 x 39 x 3 = 936). With it, each request
    # proposes 1 at the start (prior 0.5 at batch 8), stops after a couple of rejections and probes every ~10 steps.
    assert 0 < result.num_proposed < 150, result.num_proposed
