"""When waiting requests may join a running batch: TGI's group rule, plus the tail of a group cut by the budget
(pure; no torch).

TGI's router (backends/v3 batching_task, the path for models without chunked prefill) lets new requests join a
running batch of B sequences only in groups of at least floor(B * waiting_served_ratio), unless the batch has run
max_waiting_tokens steps since the last admission: a prefill there pauses every running sequence, so it should
serve many. Our steps always mix prompt chunks with the running batch's decode tokens (TGI v3 drops the rule
altogether on that path); we keep it, as `--waiting-served-ratio` / `--max-waiting-tokens` describe, with one
difference: a group that `--max-batch-prefill-tokens` cut short keeps joining at the next steps without being
measured again. The rule already let that group interrupt the batch; its tail is no new, smaller group, and
holding it back only delays it. So while more requests wait than one step's budget takes, admission goes on step
after step (what TGI v3 does at every step on its chunked path); the rule applies again once a step has room for
every waiting request, or stops at KV blocks, the batch size or the total-token budget. Measured on `hack/bench-server.py` (64 requests x 128 tokens arriving within
0.1 s, 2097-token budget): the group came in as 17, 18 and 16 requests, then the last 13 were fewer than
floor(51 * 0.3) = 15 and waited 20 decode steps (3.4 s of a 17.1 s TTFT p99) before they could join.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AdmissionState:
    """What the scheduler remembers between steps for this rule."""

    steps_since_admission: int = 0   # steps run since the last admission, the admitting one counting 1 (TGI)
    group_cut_by_budget: bool = False  # the last admitting step ran out of prefill budget with requests left


def min_group_size(state: AdmissionState, num_running: int, waiting_served_ratio: float,
                   max_waiting_tokens: int) -> int:
    """How many waiting requests must be able to join at once for any of them to join this step."""
    if not num_running or state.group_cut_by_budget or state.steps_since_admission >= max_waiting_tokens:
        return 0
    return math.floor(num_running * waiting_served_ratio)


def after_step(state: AdmissionState, num_admitted: int, num_waiting_left: int, budget_ran_out: bool) -> AdmissionState:
    """The state for the next step, once this step's admission is decided.

    `budget_ran_out`: this step's prefill budget (or, with static shapes, its prefill shape) stopped admission,
    or prompt chunks of earlier admissions used all of it. A cut group stays open while steps keep running out of
    budget with requests still waiting (long prompts may take several steps before the next one fits); it closes
    when a step admits the rest, or stops for another reason (KV blocks, batch size, total tokens).
    """
    steps = 1 if num_admitted else state.steps_since_admission + 1
    still_open = (num_admitted > 0 or state.group_cut_by_budget) and budget_ran_out and num_waiting_left > 0
    return AdmissionState(steps_since_admission=steps, group_cut_by_budget=still_open)
