"""What a rollout step says: the Progressing condition's reason and message, and its Events. Pure."""
from __future__ import annotations

import dataclasses

from textgen_operator.rollout.model import Plan, RolloutInput

EventTuple = tuple[str, str, str]     # (Normal | Warning, reason, message)


def _phase(inp: RolloutInput, plan: Plan, num_ready: int) -> tuple[str, str]:
    spec, rec = inp.spec, inp.recorded
    capacity = max(0, spec.replicas - spec.max_unavailable)
    counts = (f"{plan.updated} pod(s) at revision {plan.target}, {num_ready} Ready, "
              f"at least {capacity} kept Ready")
    if rec.template_revision is None:
        return "Creating", "The StatefulSet is being created"
    if plan.degraded_reason == "RolloutFailed":
        return "RolloutFailed", (f"revision {plan.failed_revision} failed and spec.rollout.autoRollback is false: "
                                 f"the rollout stopped where it was ({counts})")
    if plan.degraded_reason == "RolledBack":
        if plan.rolling:
            return "RollingBack", f"rolling back to revision {plan.target}: {counts}"
        return "RolledBack", f"rolled back to revision {plan.target}; revision {plan.failed_revision} failed"
    if spec.paused and plan.rolling:
        return "Paused", f"spec.rollout.paused holds the rollout: {counts}"
    if plan.rolling:
        warming = [p for p in inp.pods if p.revision == plan.target and not p.ready and not p.terminating]
        if warming or not any(p.revision == plan.target for p in inp.pods):
            return "WarmingUp", (f"{len(warming)} pod(s) of revision {plan.target} warming up before an old pod "
                                 f"stops: {counts}")
        return "RollingUpdate", f"replacing old pods: {counts}"
    if num_ready < spec.replicas:
        return "Scaling", f"{num_ready}/{spec.replicas} replicas ready"
    return "Stable", "All replicas run the current spec"


def _events(inp: RolloutInput, plan: Plan, num_ready: int, newly_failed: str | None) -> list[EventTuple]:
    spec, rec = inp.spec, inp.recorded
    capacity = max(0, spec.replicas - spec.max_unavailable)
    events: list[EventTuple] = []
    if newly_failed is not None:
        if plan.degraded_reason == "RolledBack":
            events.append(("Warning", "RollingBack", f"revision {plan.failed_revision} failed ({newly_failed}); "
                                                     f"rolling back to revision {plan.target}"))
        else:
            events.append(("Warning", "RolloutFailed", f"revision {plan.failed_revision} failed ({newly_failed}); "
                                                       "spec.rollout.autoRollback is false: stopped"))
    elif plan.rolling and rec.started is None and rec.template_revision is not None:
        events.append(("Normal", "RolloutStarted",
                       f"rolling to revision {plan.target}: {spec.max_surge} surge pod(s) warm up before any old "
                       f"pod stops; at least {capacity} of {spec.replicas} kept Ready"))
    for pod in plan.delete:
        why = "it is not Ready" if not pod.ready else f"{num_ready} pods are Ready (capacity {capacity} kept)"
        events.append(("Normal", "ReplacingPod", f"deleting pod {pod.name} of revision {pod.revision} since {why}; "
                                                 f"it drains and returns at revision {plan.target}"))
    if plan.finished is not None and rec.started is not None:
        seconds = max(0.0, inp.now - rec.started)
        reason = "RolloutComplete" if plan.finished == "complete" else "RollbackComplete"
        events.append(("Normal", reason, f"every replica runs revision {plan.target} ({seconds:.0f} s)"))
    return events


def describe(inp: RolloutInput, plan: Plan, num_ready: int, newly_failed: str | None) -> Plan:
    """The plan with its Progressing reason and message, and the Events of this step."""
    phase, message = _phase(inp, plan, num_ready)
    return dataclasses.replace(plan, phase=phase, message=message,
                               events=tuple(_events(inp, plan, num_ready, newly_failed)))
