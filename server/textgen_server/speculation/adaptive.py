"""How many candidates each request proposes, from its recent acceptance and the batch size (pure Python).

Why: a verify position costs compute whether or not its candidate is kept. At batch 1 a CPU decode step is bound
by reading the weights, so a few extra query tokens cost little; at batch 8 and more, every row's extra tokens go
through the matmuls at full price. Medusa on open-ended prompts at batch 8 measured 0.88x speculation-off
without this rule: proposing there loses more than the accepted tokens win.

The rule: request r keeps an estimate a_r of the probability that a candidate is accepted given the previous one
was (the geometric model behind "accept while they match"): decayed counts of accepted candidates and of trials
(accepted + 1 for the first rejection), with a Laplace prior (1 of 2). Candidate i is then kept only while the
chance that it is reached and accepted, a_r^i, is at least MIN_GAIN_PER_ROW x batch size (capped at MAX_GAIN):
a candidate must pay for the share of the step that one more query token per row costs, which grows with the
batch. Steps without proposals still decay the counts, so an estimate drifts back to the prior (0.5) and a
request whose text starts to repeat gets probed again (at batch 8, a request whose candidates are always
rejected proposes one every ~6 steps; after a long rejection streak, the first probe comes ~10 steps later).

With measured step costs (StepCosts, timed by the shard at warmup: shard/verify_cost.py) the bar above is replaced
by the cost-aware choice (best_candidates): the count k that maximizes expected tokens per unit of step time,
(1 + a_r + ... + a_r^k) / cost(k + 1 query tokens per row) relative to cost(1). On this CPU a float32 step with 4+
query tokens per row switches matmul kernels and costs ~1.5x a 1-token step, so k stops at 2 there; where costs
are flat (a GPU bound by reading the weights), every candidate with any chance of acceptance pays. The bar rule
stays for runners that were never warmed up (unit tests building a runner directly).
Exactness does not depend on this: it only decides how many candidates are sent for verification.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DECAY = 0.8              # weight of the past per verify step: the estimate follows the last ~5 steps
MIN_GAIN_PER_ROW = 0.05  # a_r^i needed per row of the batch: 0.05 at batch 1, 0.4 at batch 8
MAX_GAIN = 0.9           # the bar never rises above this (batch 18+): near-certain candidates still pay


@dataclass
class Acceptance:
    """One request's decayed evidence: accepted candidates and trials (accepted + the first rejection)."""

    accepted: float = 0.0
    trials: float = 0.0

    @property
    def rate(self) -> float:
        return (self.accepted + 1.0) / (self.trials + 2.0)

    def update(self, proposed: int, accepted: int) -> None:
        """After a step that verified `proposed` candidates and kept `accepted` of them (0, 0: none proposed)."""
        self.accepted = self.accepted * DECAY + accepted
        self.trials = self.trials * DECAY + accepted + (1 if accepted < proposed else 0)


def min_gain(batch_size: int, per_row: float = MIN_GAIN_PER_ROW) -> float:
    """The chance of being reached and accepted a candidate needs in a batch of `batch_size` rows."""
    return min(MAX_GAIN, per_row * max(1, batch_size))


def num_candidates(rate: float, bar: float, limit: int) -> int:
    """The most candidates (<= limit) whose reach-and-accept chance rate^i clears `bar` (min_gain)."""
    chance, count = 1.0, 0
    while count < limit:
        chance *= rate
        if chance < bar:
            break
        count += 1
    return count


@dataclass(frozen=True)
class StepCosts:
    """Measured seconds of one decode step, per batch size, for 1, 2, ..., K + 1 query tokens per row."""

    by_batch: dict[int, tuple[float, ...]] = field(default_factory=dict)

    def relative(self, batch_size: int) -> tuple[float, ...]:
        """The costs of the largest measured batch <= batch_size (else the smallest), relative to 1 query/row."""
        sizes = sorted(self.by_batch)
        below = [size for size in sizes if size <= batch_size]
        costs = self.by_batch[below[-1] if below else sizes[0]]
        return tuple(cost / costs[0] for cost in costs)


def best_candidates(rate: float, relative_costs: tuple[float, ...], limit: int) -> int:
    """The k <= limit maximizing expected tokens per step time, (1 + rate + ... + rate^k) / relative_costs[k]
    (relative_costs[k]: a step with k candidates per row, i.e. k + 1 query tokens, over one without any).
    Ties keep fewer candidates: equal speed for less work."""
    best, best_speed = 0, 1.0 / relative_costs[0]
    expected, chance = 1.0, 1.0
    for k in range(1, min(limit, len(relative_costs) - 1) + 1):
        chance *= rate
        expected += chance
        speed = expected / relative_costs[k]
        if speed > best_speed:
            best, best_speed = k, speed
    return best


class AcceptanceTracker:
    """Per request id: its Acceptance; the shard updates it after each step and drops it with the request."""

    def __init__(self, min_gain_per_row: float = MIN_GAIN_PER_ROW) -> None:
        """min_gain_per_row 0 turns the rule off (every candidate proposed): tests of the verify step use it."""
        self.min_gain_per_row = min_gain_per_row
        self.costs: StepCosts | None = None  # set by the shard's warmup (shard/verify_cost.py); None: the bar rule
        self._by_request: dict[int, Acceptance] = {}

    def update(self, request_id: int, proposed: int, accepted: int) -> None:
        self._by_request.setdefault(request_id, Acceptance()).update(proposed, accepted)

    def limit(self, request_id: int, batch_size: int, limit: int) -> int:
        rate = self._by_request.get(request_id, Acceptance()).rate
        if self.costs is None or not self.costs.by_batch or self.min_gain_per_row == 0:
            return num_candidates(rate, min_gain(batch_size, self.min_gain_per_row), limit)
        return best_candidates(rate, self.costs.relative(batch_size), limit)

    def forget(self, request_id: int) -> None:
        self._by_request.pop(request_id, None)

    def clear(self) -> None:
        self._by_request.clear()
