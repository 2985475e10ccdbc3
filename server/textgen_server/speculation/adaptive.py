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
by a plan for the whole batch (plan_batch): the candidates that maximize the batch's expected tokens per unit of
step time, (rows + the kept candidates' chances a_r^i) / cost(rows + kept candidates). A step's cost follows its
total query tokens (the matmuls run over the flat token layout; only attention pads rows to the longest), so one
row's candidate costs the batch one token's worth: the rule is no longer per row, where a row's k was priced as
if every row carried k (what made the max of per-row choices set the price). On this CPU a float32 step with 4+
query tokens switches matmul kernels (batch 1: ~1.5x a 1-token step), so a lone request stops at 2 candidates;
at batch 8 one token more costs ~1% of the step, so likely candidates pay; where costs are flat (a GPU bound by
reading the weights), every candidate with any chance of acceptance pays. The bar rule stays for runners that
were never warmed up (unit tests building a runner directly).
Exactness does not depend on this: it only decides how many candidates are sent for verification.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
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

    def step_seconds(self, rows: int, tokens: int) -> float:
        """A step of `rows` rows and `tokens` query tokens in all, however they are split over the rows: the
        rows' plain step (interpolated between the measured batch sizes), plus what the extra tokens add in the
        table of the nearest measured batch size (largest <= rows, else the smallest). Extra tokens are priced as
        tokens, not as queries per row: the matmuls, most of a step, run over the flat token layout, and
        attention pads rows only to the step's longest (a few % at these contexts)."""
        sizes = sorted(self.by_batch)
        base = _interpolate([(size, self.by_batch[size][0]) for size in sizes], rows)
        nearest = max([size for size in sizes if size <= rows], default=sizes[0])
        costs = self.by_batch[nearest]
        extra = [(nearest * queries, cost - costs[0]) for queries, cost in enumerate(costs)]
        return base + _interpolate(extra, tokens - rows)


def _interpolate(points: list[tuple[int, float]], x: int) -> float:
    """Linear between points (sorted by x), flat below the first, the last segment's slope beyond the last."""
    if x <= points[0][0] or len(points) == 1:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return y1 + (y1 - y0) * (x - x1) / (x1 - x0)


def plan_batch(rates: Sequence[float], available: Sequence[int], step_seconds: Callable[[int], float]) -> list[int]:
    """Candidates per row (each <= available[r]) maximizing the batch's expected tokens per second of step time:
    (rows + sum of the kept candidates' chances rate_r^i) / step_seconds(rows + kept candidates).

    Why batch-level: a step's cost follows its total tokens, so one row's candidate costs the batch one token's
    worth, not a whole extra query per row. For a given number m of candidates the best set is the m highest
    chances (each row's chances fall with i, so a row's set is a prefix of its proposals); then the best m wins.
    Ties keep fewer candidates: equal speed for less work."""
    chances = sorted(((rate ** i, row) for row, (rate, count) in enumerate(zip(rates, available))
                      for i in range(1, count + 1)), key=lambda chance: -chance[0])  # stable: i order on ties
    rows = len(rates)
    best, best_speed, expected = 0, rows / step_seconds(rows), float(rows)
    for m, (chance, _) in enumerate(chances, 1):
        expected += chance
        speed = expected / step_seconds(rows + m)
        if speed > best_speed:
            best, best_speed = m, speed
    counts = [0] * rows
    for _, row in chances[:best]:
        counts[row] += 1
    return counts


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
        """The bar rule for one row (num_candidates): what a runner without measured costs proposes."""
        rate = self._by_request.get(request_id, Acceptance()).rate
        return num_candidates(rate, min_gain(batch_size, self.min_gain_per_row), limit)

    def limits(self, request_ids: Sequence[int], available: Sequence[int]) -> list[int]:
        """Candidates to keep per row of a step (request_ids[r] proposed available[r]): the batch plan
        (plan_batch) with measured costs, else the bar rule row by row."""
        if self.costs is None or not self.costs.by_batch or self.min_gain_per_row == 0:
            return [self.limit(request_id, len(request_ids), count)
                    for request_id, count in zip(request_ids, available)]
        rates = [self._by_request.get(request_id, Acceptance()).rate for request_id in request_ids]
        costs, rows = self.costs, len(request_ids)
        return plan_batch(rates, available, lambda tokens: costs.step_seconds(rows, tokens))

    def forget(self, request_id: int) -> None:
        self._by_request.pop(request_id, None)

    def clear(self) -> None:
        self._by_request.clear()
