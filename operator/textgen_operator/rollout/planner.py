"""The rollout planner: observed pods and recorded revisions in, the next step out. Pure.

The StatefulSet uses `updateStrategy: OnDelete` and `podManagementPolicy: Parallel`: its controller never
replaces a pod by itself, and creates every missing ordinal at once from the current template. So the operator
moves a rollout with two levers only: the StatefulSet's `replicas` (spec.replicas + maxSurge while rolling: the
extra ordinals start at the new revision) and deleting an old pod (its ordinal comes back at the new revision).

Invariants (each is a test in tests/rollout/):
- never more than spec.replicas + maxSurge pods asked for;
- an old pod that is Ready is deleted only while the Ready pods left stay >= spec.replicas - maxUnavailable
  (terminating pods are not Ready: they left the Service's endpoints);
- nothing is deleted before the StatefulSet controller has seen the template of the target revision;
- a target revision whose pods fail (a container that exited FAILED_AFTER_EXITS times, a configuration error)
  or stay unready past warmupTimeoutSeconds is recorded as failed; with autoRollback the last good revision becomes the target again
  (its pods are still serving), without it the rollout stops where it is; a failed revision is not tried again
  until the spec builds a different one;
- paused: no pod is deleted;
- no pod is deleted in the step that lowers the count (scale_down: a deleted pod comes back warming while the
  scale-down stops others); the next step carries on.
"""
from __future__ import annotations

from textgen_operator.rollout.model import Plan, PodView, RolloutInput
from textgen_operator.rollout.words import describe

# A new revision's container must exit this often before the revision counts as failed. A fault of the revision
# (a flag the server refuses, a model it cannot load) repeats at every start, so 3 exits cost two more starts
# and one 10 s back-off over giving up at the first; a one-off (an OOM kill at a burst, a liveness timeout at
# load, a node hiccup) does not roll a good revision back. Errors no restart fixes (config, image) fail at once,
# and a pod that never gets Ready fails at warmupTimeoutSeconds whatever its exits.
FAILED_AFTER_EXITS = 3


def _target(inp: RolloutInput, failed: str | None) -> str:
    """The revision the pods should run: the spec's, or the last good one after a rollback; while paused, the
    StatefulSet's current one (when the operator can rebuild it)."""
    spec, rec = inp.spec, inp.recorded
    if spec.paused and rec.template_revision in (inp.spec_revision, rec.good_revision):
        return rec.template_revision or inp.spec_revision
    if failed is not None and spec.auto_rollback and rec.good_revision not in (None, failed):
        return rec.good_revision or inp.spec_revision
    return inp.spec_revision


def detect_failure(inp: RolloutInput, target: str) -> str | None:
    """Why the target revision failed, from its own pods (the first one by name), or None."""
    timeout = inp.spec.warmup_timeout_seconds
    for pod in sorted(inp.pods, key=lambda p: p.name):
        if pod.terminating or pod.revision != target:
            continue
        if pod.failure is not None and (pod.exits is None or pod.exits >= FAILED_AFTER_EXITS):
            return f"pod {pod.name}: {pod.failure}"
        if not pod.ready and pod.age_seconds > timeout:
            return (f"pod {pod.name} is not Ready {pod.age_seconds:.0f} s after it was created "
                    f"(spec.rollout.warmupTimeoutSeconds: {timeout})")
    return None


def _in_place(pods: list[PodView], target: str, replicas: int) -> bool:
    """Every ordinal below spec.replicas is a Ready pod of the target revision."""
    ready = {p.ordinal for p in pods if p.revision == target and p.ready}
    return all(i in ready for i in range(replicas))


def _deletions(inp: RolloutInput, old: list[PodView], num_ready: int) -> tuple[PodView, ...]:
    """Old pods that may go now: the unready ones (they serve nothing), then Ready ones while the Ready pods
    left stay at or above the promised capacity; highest ordinal first."""
    capacity = max(0, inp.spec.replicas - inp.spec.max_unavailable)
    by_ordinal = sorted(old, key=lambda p: -p.ordinal)
    unready = [p for p in by_ordinal if not p.ready]
    ready = [p for p in by_ordinal if p.ready]
    return tuple(unready + ready[:max(0, num_ready - capacity)])


def _recheck(inp: RolloutInput, target: str) -> float | None:
    """Seconds until the first unready pod of the target revision reaches its warmup timeout."""
    left = [inp.spec.warmup_timeout_seconds - p.age_seconds for p in inp.pods
            if p.revision == target and not p.ready and not p.terminating]
    return max(1.0, min(left) + 1.0) if left else None


def plan_rollout(inp: RolloutInput) -> Plan:
    """The next step of the rollout (see the module's invariants)."""
    spec, rec = inp.spec, inp.recorded
    failed = rec.failed_revision if rec.failed_revision == inp.spec_revision else None
    message = rec.failed_message if failed is not None else None
    target = _target(inp, failed)
    rolling_out = target == inp.spec_revision and rec.good_revision not in (None, target)
    newly_failed = detect_failure(inp, target) if failed is None and rolling_out else None
    if newly_failed is not None:
        failed, message = target, newly_failed
        target = _target(inp, failed)
    active = [p for p in inp.pods if not p.terminating]
    # Old pods above spec.replicas need no replacement: the end of the surge removes them.
    old = [p for p in active if p.revision != target and p.ordinal < spec.replicas]
    leaving = [p for p in inp.pods if p.terminating and p.revision != target and p.ordinal < spec.replicas]
    in_place = _in_place(active, target, spec.replicas)
    rolling = bool(old or leaving) or ((rec.replicas or 0) > spec.replicas and not in_place)
    if rec.template_revision is None:
        rolling = False      # nothing exists yet: the first pods are created, not rolled
    held = spec.paused or (failed is not None and target == failed)
    may_delete = not held and not inp.scaling_down and rec.observed and rec.template_revision == target
    replicas = spec.replicas + (spec.max_surge if rolling else 0)
    num_ready = sum(1 for p in active if p.ready)
    # Ready pods above the StatefulSet's replicas are about to be removed by its controller: they keep nothing.
    num_kept = sum(1 for p in active if p.ready and p.ordinal < replicas)
    delete = _deletions(inp, old, num_kept) if may_delete and rolling else ()
    done = not rolling and in_place and rec.template_revision == target
    plan = Plan(
        target=target, replicas=replicas, delete=delete,
        rolling=rolling, updated=sum(1 for p in active if p.revision == target),
        good_revision=target if done else rec.good_revision,
        failed_revision=failed, failed_message=message,
        degraded_reason=None if failed is None else ("RolledBack" if target != failed else "RolloutFailed"),
        started=(rec.started or inp.now) if rolling else None,
        finished=None if (rolling or rec.started is None or not done) else
        ("complete" if target == inp.spec_revision else "rolled_back"),
        recheck_seconds=_recheck(inp, target) if rolling else None)
    return describe(inp, plan, num_ready, newly_failed)
