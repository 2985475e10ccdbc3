"""What the rollout planner reads and what it decides: plain values, no Kubernetes bodies. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PodView:
    """One pod of the StatefulSet, as far as a rollout cares."""

    name: str
    uid: str
    ordinal: int
    revision: str | None       # the pod template's hash (annotation textgen.dev/template-hash)
    ready: bool
    terminating: bool          # deletionTimestamp set: out of the Service's endpoints, draining
    age_seconds: float         # since the pod was created
    failure: str | None = None  # a failing container in words (crash loop, config error), else None
    exits: int | None = None    # with a crash-loop failure: how often that container exited (None: a failure that
                                # is no exit, e.g. a config or image error, which no restart fixes)


@dataclass(frozen=True)
class Recorded:
    """What earlier reconciles wrote on the StatefulSet (annotations): the rollout's memory lives in the cluster,
    so an operator restarted mid-rollout resumes from here."""

    template_revision: str | None = None    # the revision the StatefulSet's template carries now (None: no sts)
    replicas: int | None = None             # the StatefulSet's spec.replicas now
    observed: bool = False                  # its controller has seen its current generation
    good_revision: str | None = None        # the last revision that had every replica Ready
    failed_revision: str | None = None      # a revision given up on; not tried again until the spec changes
    failed_message: str | None = None
    started: float | None = None            # when the running rollout began (epoch seconds)
    spec_replicas: int | None = None        # the spec.replicas the StatefulSet was last planned for (no surge)


@dataclass(frozen=True)
class RolloutSpec:
    replicas: int
    max_surge: int = 1
    max_unavailable: int = 0
    warmup_timeout_seconds: int = 1800
    auto_rollback: bool = True
    paused: bool = False


@dataclass(frozen=True)
class RolloutInput:
    spec: RolloutSpec
    spec_revision: str          # the revision the TGS spec builds now
    recorded: Recorded
    pods: tuple[PodView, ...]
    now: float                  # epoch seconds
    scaling_down: bool = False  # the StatefulSet's count goes down in this step: no pod is deleted in it


@dataclass(frozen=True)
class Plan:
    """The next step. `target` is the revision pods converge to: the spec's, or the last good one when the
    spec's revision failed and was rolled back."""

    target: str
    replicas: int                           # the StatefulSet's spec.replicas (spec.replicas + surge while rolling)
    delete: tuple[PodView, ...] = ()        # old pods to delete now (the StatefulSet recreates them at target)
    phase: str = "Stable"                   # Progressing condition's reason
    message: str = ""
    rolling: bool = False
    updated: int = 0                        # pods running the target revision, not terminating
    good_revision: str | None = None        # to record
    failed_revision: str | None = None      # to record (None: forget)
    failed_message: str | None = None
    degraded_reason: str | None = None      # RolledBack / RolloutFailed, with failed_message
    started: float | None = None            # to record
    finished: str | None = None             # "complete" / "rolled_back" when a rollout ends in this step
    recheck_seconds: float | None = None    # reconcile again after this long (a warmup timeout falls due)
    events: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)   # (type, reason, message)
