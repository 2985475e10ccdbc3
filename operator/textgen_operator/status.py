"""The TGS status and its conditions, computed from what was observed. Pure (the clock is an argument)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textgen_operator.events import FAILED_CREATE, FailedCreate, describe_failed_create
from textgen_operator.names import Body, selector_string, tgs_name, tgs_namespace
from textgen_operator.pod_health import container_failures, count_warming, last_warmup_seconds, unschedulable_message
from textgen_operator.problems import Problem
from textgen_operator.rollout.model import Plan
from textgen_operator.rollout.words import ready_words

CONDITION_TYPES = ("Ready", "Progressing", "Degraded")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str          # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class Transition:
    """A condition that changed status or reason: worth a Kubernetes Event."""

    event_type: str      # Normal | Warning
    reason: str
    message: str


def _sts_observed(sts: Body | None) -> bool:
    """The StatefulSet controller has seen the StatefulSet's current spec: until then its status counts (updated,
    ready, revisions) describe the previous spec and claim nothing about the one just applied."""
    if sts is None:
        return False
    return int(sts.get("status", {}).get("observedGeneration", 0)) >= int(sts["metadata"].get("generation", 0))


def _degraded(problems: list[Problem], failed_creates: list[FailedCreate], pods: list[Body]) -> Condition:
    if problems:
        return Condition("Degraded", "True", problems[0].reason, "; ".join(p.message for p in problems))
    if failed_creates:
        return Condition("Degraded", "True", FAILED_CREATE, describe_failed_create(failed_creates[0]))
    failures = container_failures(pods)
    if failures:
        more = f" (and {len(failures) - 1} more failing container(s))" if len(failures) > 1 else ""
        return Condition("Degraded", "True", failures[0].reason,
                         f"{failures[0].describe()}{more}. Fix the cause it names (the spec, the model, the node); "
                         "`kubectl logs <pod> --previous` shows the whole log of the last run")
    unschedulable = unschedulable_message(pods)
    if unschedulable:
        return Condition("Degraded", "True", "Unschedulable",
                         f"{unschedulable}. Free or add nodes with the requested devices, or lower "
                         "spec.accelerator.count / spec.resources / spec.replicas")
    return Condition("Degraded", "False", "AsExpected", "No problems observed")


# Progressing reasons of a rollout that is not moving (done, or given up on and waiting for a spec change).
SETTLED_PHASES = ("Stable", "RolledBack", "RolloutFailed")
# Whether a paused rollout progresses is the user's call: Unknown, as a Deployment with spec.paused reports its
# Progressing condition (reason DeploymentPaused).
PAUSED_PHASE = "Paused"


def _progressing(desired: int, sts: Body | None, rollout: Plan | None = None) -> Condition:
    if sts is None:
        return Condition("Progressing", "True", "Creating", "The StatefulSet is being created")
    if rollout is not None:
        settled = rollout.phase in SETTLED_PHASES
        status = "Unknown" if rollout.phase == PAUSED_PHASE else "False" if settled else "True"
        return Condition("Progressing", status, rollout.phase, rollout.message)
    st = sts.get("status", {})
    if not _sts_observed(sts):
        return Condition("Progressing", "True", "Updating", "The StatefulSet controller has not seen the change yet")
    if st.get("updateRevision") and st.get("currentRevision") != st.get("updateRevision"):
        return Condition("Progressing", "True", "RollingUpdate",
                         f"{st.get('updatedReplicas', 0)}/{desired} replicas run the current spec")
    if st.get("replicas", 0) != desired or st.get("readyReplicas", 0) < desired:
        return Condition("Progressing", "True", "Scaling",
                         ready_words(st.get("readyReplicas", 0), desired, _running(sts)))
    return Condition("Progressing", "False", "Stable", "All replicas run the current spec")


def _running(sts: Body | None) -> int:
    """The StatefulSet's spec.replicas: what its controller keeps running (the surge included)."""
    return int((sts or {}).get("spec", {}).get("replicas", 0))


def _ready(desired: int, sts: Body | None, blocking: list[Problem], rollout: Plan | None = None) -> Condition:
    if blocking:
        return Condition("Ready", "False", blocking[0].reason, blocking[0].message)
    if rollout is not None and rollout.phase == PAUSED_PHASE and sts is not None:
        # Held before it started too: the pods serve, but not the spec (the health a GitOps tool shows).
        return Condition("Ready", "False", "RolloutPaused", rollout.message)
    if rollout is not None and rollout.rolling and sts is not None:
        return Condition("Ready", "False", "ReplicasNotReady", f"a rollout is in progress: {rollout.message}")
    st = (sts or {}).get("status", {})
    ready, updated = st.get("readyReplicas", 0), st.get("updatedReplicas", 0)
    if rollout is not None:
        updated = rollout.updated     # under OnDelete the StatefulSet's count lags; the plan's is from the pods
    if desired == 0:
        return Condition("Ready", "True", "ScaledToZero", "spec.replicas is 0")
    if sts is not None and not _sts_observed(sts):
        # Same reason as any other wait for replicas: a reason change would be one more Event per new TGS.
        before = "; its replica counts describe the previous spec" if st.get("observedGeneration") else ""
        return Condition("Ready", "False", "ReplicasNotReady",
                         f"the StatefulSet controller has not observed generation {sts['metadata'].get('generation')} "
                         f"of the StatefulSet yet{before}")
    if sts is not None and ready >= desired and updated >= desired:
        return Condition("Ready", "True", "AllReplicasReady", ready_words(ready, desired, _running(sts)))
    return Condition("Ready", "False", "ReplicasNotReady", ready_words(ready, desired, _running(sts)))


def build_conditions(tgs: Body, sts: Body | None, pods: list[Body], problems: list[Problem],
                     failed_creates: Sequence[FailedCreate] = (), rollout: Plan | None = None) -> list[Condition]:
    """Ready, Progressing and Degraded, in that order. failed_creates: the StatefulSet controller's FailedCreate
    warnings that still hold (events.current_failed_creates); rollout: the rollout planner's step."""
    desired = int(tgs["spec"].get("replicas", 1))
    blocking = [p for p in problems if p.blocking]
    return [_ready(desired, sts, blocking, rollout), _progressing(desired, sts, rollout),
            _degraded(problems, list(failed_creates), pods)]


def _merge_conditions(old: list[Body], new: list[Condition], generation: int, now: str) -> list[Body]:
    """Condition dicts; lastTransitionTime only moves when the status flips."""
    by_type = {c.get("type"): c for c in old}
    merged = []
    for c in new:
        prev = by_type.get(c.type)
        since = prev["lastTransitionTime"] if prev and prev.get("status") == c.status and "lastTransitionTime" in prev else now
        merged.append({"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
                       "lastTransitionTime": since, "observedGeneration": generation})
    return merged


def build_status(tgs: Body, sts: Body | None, pods: list[Body], problems: list[Problem], now: str,
                 failed_creates: Sequence[FailedCreate] = (), extra_conditions: Sequence[Condition] = (),
                 rollout: Plan | None = None) -> Body:
    """The full status subresource of a TGS. extra_conditions (e.g. Autoscaling) follow Ready, Progressing and
    Degraded; rollout (the planner's step) gives the revisions, updatedReplicas and Progressing."""
    st = (sts or {}).get("status", {})
    generation = int(tgs["metadata"].get("generation", 0))
    status: Body = {
        "observedGeneration": generation,
        "replicas": int(st.get("replicas", 0)),
        "readyReplicas": int(st.get("readyReplicas", 0)),
        # Pods on the current spec: unknown (0) until the StatefulSet controller has seen that spec.
        "updatedReplicas": int(st.get("updatedReplicas", 0)) if _sts_observed(sts) else 0,
        "warmingReplicas": count_warming(pods),
        "selector": selector_string(tgs),
        "endpoint": f"http://{tgs_name(tgs)}.{tgs_namespace(tgs)}.svc:80",
        "conditions": _merge_conditions(tgs.get("status", {}).get("conditions", []),
                                        build_conditions(tgs, sts, pods, problems, failed_creates, rollout)
                                        + list(extra_conditions),
                                        generation, now),
    }
    for field in ("currentRevision", "updateRevision"):
        if st.get(field):
            status[field] = st[field]
    if rollout is not None and sts is not None:
        # Revisions are pod template hashes; the StatefulSet's own currentRevision never moves under OnDelete.
        status["updatedReplicas"] = rollout.updated
        status["updateRevision"] = rollout.target
        status.pop("currentRevision", None)
        if rollout.good_revision:
            status["currentRevision"] = rollout.good_revision
    warmup = last_warmup_seconds(pods)
    if warmup is None:      # no Ready pod tells now (all restarting, scaled to zero): keep the last measurement
        warmup = tgs.get("status", {}).get("lastWarmupSeconds")
    if warmup is not None:
        status["lastWarmupSeconds"] = warmup
    return status


def status_changed(old: Body, new: Body) -> bool:
    """True when a status patch is needed (fields we own differ)."""
    return any(old.get(k) != v for k, v in new.items())


_EVENT_TYPES: dict[tuple[str, str], str] = {
    ("Ready", "True"): "Normal", ("Ready", "False"): "Normal",
    ("Degraded", "True"): "Warning", ("Degraded", "False"): "Normal",
    # The autoscaler's own reason: cannot get metrics / cannot scale (Warning), limited at max, overridden.
    ("Autoscaling", "False"): "Warning", ("Autoscaling", "True"): "Normal",
}
_WARNING_REASONS = frozenset({"ScaleOverridden"})   # a True condition that still asks the user to act
# Progressing reasons that are news although Progressing churns: a scale-down the operator holds back.
_PROGRESSING_NEWS = frozenset({"ScaleDownDeferred"})


def build_transitions(old: list[Body], new: list[Body]) -> list[Transition]:
    """Events for Ready, Degraded and Autoscaling changes of status or reason (Progressing churns too much to be
    news, but for the reasons in _PROGRESSING_NEWS)."""
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in old}
    events = []
    for c in new:
        key = (c["type"], c["status"])
        news = _EVENT_TYPES.get(key) or ("Normal" if c["type"] == "Progressing"
                                         and c["reason"] in _PROGRESSING_NEWS else None)
        if news is not None and before.get(c["type"]) != (c["status"], c["reason"]):
            if c["type"] not in before and key in (("Degraded", "False"), ("Ready", "False")):
                continue   # a fresh object that is starting normally: no news (and one write less)
            event_type = "Warning" if c["reason"] in _WARNING_REASONS else news
            events.append(Transition(event_type, c["reason"], c["message"]))
    return events
