"""What a rollout step says: the Progressing condition's reason and message, and its Events. Pure."""
from __future__ import annotations

import dataclasses

from textgen_operator.rollout.model import Plan, RolloutInput

EventTuple = tuple[str, str, str]     # (Normal | Warning, reason, message)


def ready_words(num_ready: int, num_desired: int, num_running: int) -> str:
    """How many pods are Ready against spec.replicas, never as "2/1": pods above spec.replicas are named for what
    they are. num_running: the StatefulSet's spec.replicas (a surge or a deferred scale-down keeps more)."""
    if num_ready <= num_desired:
        return f"{num_ready}/{num_desired} replicas ready"
    extra = num_ready - num_desired
    if num_running >= num_ready:
        why = f"kept for now: the StatefulSet runs {num_running}"
    else:
        why = f"being removed: the StatefulSet now runs {num_running}"
    return f"{num_ready} ready ({num_desired} desired + {extra} {why})"


def _first_pods(inp: RolloutInput, plan: Plan) -> str:
    """What happens while no pod of the target revision exists yet (never "0 pod(s) warming")."""
    surge = inp.spec.max_surge
    if surge == 0:
        return (f"spec.rollout.maxSurge is 0: an old pod stops first and its ordinal comes back at revision "
                f"{plan.target}")
    if inp.recorded.template_revision != plan.target or not inp.recorded.observed:
        return (f"revision {plan.target} goes onto the StatefulSet; its controller then creates {surge} surge "
                f"pod(s), which warm up before an old pod stops")
    return f"creating {surge} surge pod(s) of revision {plan.target}, which warm up before an old pod stops"


def _rolling(inp: RolloutInput, plan: Plan, counts: str) -> tuple[str, str]:
    target = [p for p in inp.pods if p.revision == plan.target]
    warming = [p for p in target if not p.ready and not p.terminating]
    if warming:
        return "WarmingUp", (f"{len(warming)} pod(s) of revision {plan.target} starting or warming up before an "
                             f"old pod stops: {counts}")
    if not target:
        return "WarmingUp", f"{_first_pods(inp, plan)}: {counts}"
    return "RollingUpdate", f"replacing old pods: {counts}"


def _paused(inp: RolloutInput, plan: Plan, num_ready: int, counts: str) -> str:
    if plan.target == inp.spec_revision:
        return f"spec.rollout.paused holds the rollout: {counts}"
    # The StatefulSet keeps the old template: the spec's revision has not reached a single pod.
    return (f"spec.rollout.paused holds revision {inp.spec_revision} of the spec, which has not started: "
            f"{plan.updated} pod(s) stay at revision {plan.target}, {num_ready} Ready. Set spec.rollout.paused "
            f"to false to roll it out")


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
    if spec.paused and (plan.rolling or plan.target != inp.spec_revision):
        return "Paused", _paused(inp, plan, num_ready, counts)
    if plan.rolling:
        return _rolling(inp, plan, counts)
    if num_ready < spec.replicas:
        return "Scaling", f"{num_ready}/{spec.replicas} replicas ready"
    if spec.paused:
        return "Stable", "All replicas run the current spec; spec.rollout.paused will hold the next spec change"
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
        first = (f"{spec.max_surge} surge pod(s) warm up before any old pod stops" if spec.max_surge else
                 f"maxSurge 0: up to {spec.max_unavailable} old pod(s) stop before their replacements exist")
        events.append(("Normal", "RolloutStarted", f"rolling to revision {plan.target}: {first}; at least "
                                                   f"{capacity} of {spec.replicas} kept Ready"))
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
