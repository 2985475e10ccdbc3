"""The adaptive rule (speculation/adaptive.py): fewer candidates at low acceptance and in large batches, probes
again after a while, and, on the real engine, a proposer that is always wrong stops costing verify positions
while the output stays exact."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from spec_testlib import EngineRun, Job, random_prompts
from textgen_server.shard.verify_cost import (MAX_ROUNDS, ROUNDS, consistent, estimate_costs, isotonic,
                                              timed_rounds, verify_items)
from textgen_server.speculation.adaptive import (Acceptance, AcceptanceTracker, StepCosts, min_gain, num_candidates,
                                                 plan_batch)

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
    assert tracker.limits([7] + [0] * 7, [2] * 8) == [0] + [1] * 7 and tracker.limit(8, 8, 2) == 1
    tracker.forget(7)
    assert tracker.limit(7, 8, 2) == 1
    assert AcceptanceTracker(min_gain_per_row=0.0).limit(7, 400, 3) == 3  # the rule off


def at(costs: StepCosts, rows: int):
    """The step cost by total query tokens of a `rows`-row step, as the tracker hands it to plan_batch."""
    return lambda tokens: costs.step_seconds(rows, tokens)


def test_step_cost_is_the_rows_plain_step_plus_the_extra_tokens() -> None:
    assert CPU_COSTS.step_seconds(1, 1) == 28.3 and CPU_COSTS.step_seconds(1, 4) == 43.5
    assert CPU_COSTS.step_seconds(8, 12) == 69.0            # 4 extra tokens: half of one query per row
    assert CPU_COSTS.step_seconds(8, 48) == 150.0           # beyond the table: its last slope
    assert CPU_COSTS.step_seconds(4, 4) == pytest.approx(28.3 + 31.7 * 3 / 7)  # between the batch sizes
    assert CPU_COSTS.step_seconds(4, 6) == pytest.approx(28.3 + 31.7 * 3 / 7 + 1.7)  # batch 1's extra tokens
    assert CPU_COSTS.step_seconds(16, 16) == pytest.approx(60.0 + 31.7 * 8 / 7)      # more rows, dearer still


def test_batch_plan_prices_a_candidate_by_the_tokens_it_adds() -> None:
    batch1 = at(CPU_COSTS, 1)
    assert plan_batch([0.8], [4], batch1) == [2]         # 2.44 / 30.0 beats 3.36 / 44.7: not 4 (kernel switch)
    assert plan_batch([0.99], [4], batch1) == [4]        # near-certain candidates still pay the 1.58x step
    assert plan_batch([0.8], [1], batch1) == [1]         # never above the proposer's own count
    flat = at(StepCosts({1: (1.0,) * 5, 8: (1.0,) * 5}), 2)  # a GPU bound by reading the weights
    assert plan_batch([0.8, 0.1], [4, 4], flat) == [4, 4]
    assert plan_batch([0.0, 0.0], [4, 4], flat) == [0, 0]  # nothing expected: same speed, less work
    # Batch 8, each token 2.25 ms of a 60 ms step: 1 candidate per row at rate 0.5 (12/78 beats 14/96), none at 0.2.
    assert plan_batch([0.5] * 8, [4] * 8, at(CPU_COSTS, 8)) == [1] * 8
    assert plan_batch([0.2] * 8, [4] * 8, at(CPU_COSTS, 8)) == [0] * 8
    # Mixed rows: the likely ones get more, the unlikely none; only the m best chances are paid for.
    assert plan_batch([0.95, 0.95, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2], [4] * 8, at(CPU_COSTS, 8)) == [4, 4] + [0] * 6
    # A lone proposing row pays 0.75 ms per candidate (8.75 / 31.5 beats 8.5 / 30.75), not a query per row: priced
    # so (a k-candidate row as if every row carried k: 1.75 / 1.4 x the plain step), its second candidate lost.
    batch8 = at(StepCosts({8: (30.0, 36.0, 42.0)}), 8)
    assert plan_batch([0.5] * 8, [2] + [0] * 7, batch8) == [2] + [0] * 7
    assert plan_batch([0.45] * 8, [2] * 8, batch8) == [1] * 8     # 11.6 / 36 beats 13.2 / 42


def test_tracker_plans_the_batch_once_warmup_set_costs() -> None:
    tracker = AcceptanceTracker()
    for _ in range(10):
        tracker.update(7, 4, 4)                      # rate ~0.92
    assert tracker.limits([7], [4]) == [4]           # the bar rule: 0.92^4 >= 0.05
    tracker.costs = StepCosts({1: (1.0, 1.0, 1.0, 10.0, 10.0)})
    assert tracker.limits([7], [4]) == [2]           # a 10x step for 3+ candidates never pays
    assert tracker.limits([7, 8], [4, 0]) == [2, 0]  # a row without proposals keeps none
    tracker.min_gain_per_row = 0.0
    assert tracker.limits([7], [4]) == [4]           # the off switch wins over costs


def test_measurement_items_and_noise_floor() -> None:
    items = verify_items(8, 3, 5, num_blocks=100, block_size=16)
    assert items is not None and len(items) == 8
    assert all(len(i.token_ids) == 3 and i.num_speculative == 2 and len(i.block_ids) == 5 for i in items)
    assert len({b for i in items for b in i.block_ids}) == 40      # rows never share a block
    assert verify_items(8, 3, 5, num_blocks=39, block_size=16) is None
    assert isotonic([3.0, 2.0, 4.0, 3.5]) == (2.5, 2.5, 3.75, 3.75)   # violators averaged, not raised
    assert isotonic([1.0, 2.0, 3.0]) == (1.0, 2.0, 3.0)


# Batch 1 on this CPU, quiet: 1..5 query tokens cost 17.6/19.2/19.2/23.1/24.8 ms (4+ tokens switch kernels).
QUIET = [17.6, 19.2, 19.2, 23.1, 24.8]


def test_noisy_rounds_still_give_the_quiet_costs_and_the_quiet_choice() -> None:
    # Load bursts (x1.5 to x3) hit a different count in each round; the 1-token time is hit in 3 of 5 rounds, the
    # first round pays one-off allocations everywhere. The minima are the quiet costs.
    bursts = [(0, 3.0), (0, 2.0), (3, 1.5), (0, 1.7), (4, 2.5)]
    rounds = [[cost * (factor if index == hit else 1.0) * (2.0 if r == 0 else 1.0) for index, cost in enumerate(QUIET)]
              for r, (hit, factor) in enumerate(bursts)]
    costs = estimate_costs(rounds)
    assert costs == pytest.approx(QUIET) and consistent(rounds)
    assert plan_batch([0.7], [4], at(StepCosts({1: costs}), 1)) == [2]     # 2.19 / 19.2 beats 2.77 / 24.8


def _scripted(times: list[list[float]]) -> tuple[list[list[float]], list[bool]]:
    """timed_rounds over scripted timings (times[r][i], the last round repeated), with the votes it asked for."""
    calls, votes = [0], []

    def time_step(index: int) -> float:
        calls[0] += 1
        return times[min((calls[0] - 1) // len(QUIET), len(times) - 1)][index]

    def agree(more: bool) -> bool:
        votes.append(more)
        return more

    return timed_rounds(time_step, len(QUIET), agree, clock=lambda: 0.0), votes  # the budget never runs out


def test_contradicting_minima_time_more_rounds_until_a_quiet_moment() -> None:
    # Sustained load inflating the 1-token time in every round (the run that measured 30.9 vs 39.3 tok/s): the
    # running maximum of before made the table flat, so 4 candidates looked free. Now the minima contradict each
    # other (1 token dearer than 2), so more rounds are timed; the 7th is quiet and the quiet choice comes back.
    loaded = [30.0, 19.5, 20.0, 23.5, 25.0]
    rounds, votes = _scripted([loaded] * 6 + [QUIET])
    assert len(rounds) == 7 and votes == [True, True, False] and not consistent(rounds[:6])
    assert estimate_costs(rounds) == pytest.approx(QUIET)
    assert plan_batch([0.7], [4], at(StepCosts({1: estimate_costs(rounds)}), 1)) == [2]
    assert plan_batch([0.7], [4], at(StepCosts({1: (30.0,) * 5}), 1)) == [4]  # what flattening chose
    # No quiet moment at all: at most MAX_ROUNDS rounds, then the contradiction is averaged (isotonic), not raised.
    rounds, votes = _scripted([loaded])
    assert len(rounds) == MAX_ROUNDS and votes[-1] is False and len(votes) == MAX_ROUNDS - ROUNDS + 1
    assert estimate_costs(rounds)[0] < 30.0 and estimate_costs(rounds)[3:] == (23.5, 25.0)
    # This rank's minima agree, but another rank wants two more rounds (the all-reduced vote): it times them too.
    others = iter([True, True, False])
    assert len(timed_rounds(lambda index: QUIET[index], 5, lambda more: next(others), clock=lambda: 0.0)) == ROUNDS + 2


def test_warmup_with_speculation_measures_costs(repetitive_model_dir) -> None:
    engine = EngineRun(repetitive_model_dir("llama"), speculate=3, measured_costs=True)
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
