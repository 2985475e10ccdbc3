"""One rollout step for one TGS, from Kubernetes bodies: the StatefulSet to apply and the plan. Pure."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from textgen_operator.names import Body
from textgen_operator.problems import Problem
from textgen_operator.rollout.model import Plan, Recorded, RolloutInput
from textgen_operator.rollout.planner import plan_rollout
from textgen_operator.rollout.scale_down import ScaleDecision, decide_scale, warming_pods
from textgen_operator.rollout.statefulset import (build_rollout_statefulset, pod_views, read_recorded,
                                                  rollout_spec, template_revision)


@dataclass(frozen=True)
class Step:
    desired: list[Body]         # the children to apply, the StatefulSet as the plan wants it
    plan: Plan
    recorded: Recorded
    scale: ScaleDecision | None = None

    @property
    def problems(self) -> list[Problem]:
        """A failed revision, as the Degraded condition shows it (not blocking: the good revision serves)."""
        plan = self.plan
        if plan.degraded_reason is None:
            return []
        if plan.degraded_reason == "RolledBack":
            what = (f"rolled back to revision {plan.target}, which keeps serving; the operator will not try "
                    f"revision {plan.failed_revision} again until the spec changes. Fix the spec (the message "
                    "above says what the server refused) and apply it")
        else:
            what = ("spec.rollout.autoRollback is false, so the rollout stopped where it was. Fix the spec and "
                    "apply it, or set autoRollback true to return to the last good revision")
        return [Problem(plan.degraded_reason, f"revision {plan.failed_revision} failed: {plan.failed_message}; "
                                              f"{what}", blocking=False)]


def _deferred(plan: Plan, scale: ScaleDecision, timeout: int) -> Plan:
    """The plan of a step whose lower count waits for a warming pod: Progressing says so (its transition is an
    Event), a rollout's own words follow, and the step is looked at again when that pod's timeout falls due."""
    rollout = f"; {plan.message}" if plan.rolling else ""
    recheck = min(t for t in (plan.recheck_seconds, scale.recheck_seconds) if t is not None)
    return dataclasses.replace(plan, phase="ScaleDownDeferred", message=f"{scale.message(timeout)}{rollout}",
                               recheck_seconds=recheck)


def plan_step(tgs: Body, desired: list[Body], live_sts: Body | None, pods: list[Body], now: float) -> Step:
    """Plans the replica count (scale_down) and the rollout, and puts the plan into the desired StatefulSet (the
    other children pass through)."""
    sts = next(o for o in desired if o["kind"] == "StatefulSet")
    recorded = read_recorded(live_sts)
    spec_revision = template_revision(sts["spec"]["template"]) or ""
    spec = rollout_spec(tgs)
    autoscaled = tgs["spec"].get("autoscaling") is not None
    scale = decide_scale(spec.replicas, recorded.spec_replicas, autoscaled, warming_pods(pods, now),
                         spec.warmup_timeout_seconds)
    plan = plan_rollout(RolloutInput(dataclasses.replace(spec, replicas=scale.replicas), spec_revision, recorded,
                                     pod_views(pods, now), now, scaling_down=scale.lowered))
    if scale.deferred:
        plan = _deferred(plan, scale, spec.warmup_timeout_seconds)
    new_sts = build_rollout_statefulset(sts, plan, live_sts, scale.replicas)
    return Step([new_sts if o is sts else o for o in desired], plan, recorded, scale)
