"""Between Kubernetes bodies and the planner: pods and the live StatefulSet read into plain values, and the
plan written back into the StatefulSet to apply. Pure.

The rollout's memory is on the StatefulSet itself (annotations written by the same apply that moves the
rollout), never only in the operator: a restarted operator reads it back and continues.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from textgen_operator import GROUP
from textgen_operator.names import ANNOTATION_TEMPLATE_HASH, Body
from textgen_operator.pod_health import CRASH_LOOP, container_failure, parse_time, pod_is_ready
from textgen_operator.rollout.model import Plan, PodView, Recorded, RolloutSpec
from textgen_operator.spec import tgs_spec

GOOD_REVISION = f"{GROUP}/good-revision"
GOOD_TEMPLATE = f"{GROUP}/good-template"          # the pod template of the good revision, as JSON
FAILED_REVISION = f"{GROUP}/failed-revision"
FAILED_MESSAGE = f"{GROUP}/failed-message"
ROLLOUT_STARTED = f"{GROUP}/rollout-started"      # epoch seconds
SPEC_REPLICAS = f"{GROUP}/spec-replicas"          # the spec.replicas the StatefulSet is planned for (no surge)
ROLLOUT_ANNOTATIONS = (GOOD_REVISION, GOOD_TEMPLATE, FAILED_REVISION, FAILED_MESSAGE, ROLLOUT_STARTED,
                       SPEC_REPLICAS)


def rollout_spec(tgs: Body) -> RolloutSpec:
    spec = tgs_spec(tgs)
    r = spec.rollout
    return RolloutSpec(replicas=spec.replicas, max_surge=r.max_surge, max_unavailable=r.max_unavailable,
                       warmup_timeout_seconds=r.warmup_timeout_seconds, auto_rollback=r.auto_rollback,
                       paused=r.paused)


def template_revision(template: Body) -> str | None:
    value = template.get("metadata", {}).get("annotations", {}).get(ANNOTATION_TEMPLATE_HASH)
    return str(value) if value else None


def _ordinal(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _exits(status: Body) -> int:
    """How often a container exited: its restarts, plus the exit it has not been restarted from yet."""
    return int(status.get("restartCount", 0)) + (0 if "running" in status.get("state", {}) else 1)


def _failure(name: str, status: Body) -> tuple[str | None, int | None]:
    """The pod's failing container in words, and its exits when it is a crash loop (None: a failure no restart
    fixes, e.g. a config or image error; those come first)."""
    failures = [(f, s) for s in status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
                if (f := container_failure(name, s)) is not None]
    fatal = [f for f, _ in failures if f.reason != CRASH_LOOP]
    if fatal:
        return fatal[0].describe(), None
    crashes = sorted(((_exits(s), f) for f, s in failures), key=lambda c: -c[0])
    return (crashes[0][1].describe(), crashes[0][0]) if crashes else (None, None)


def pod_view(pod: Body, now: float) -> PodView:
    meta, status = pod["metadata"], pod.get("status", {})
    created = parse_time(meta.get("creationTimestamp"))
    failure, exits = _failure(meta["name"], status)
    return PodView(name=meta["name"], uid=str(meta.get("uid", "")), ordinal=_ordinal(meta["name"]),
                   revision=meta.get("annotations", {}).get(ANNOTATION_TEMPLATE_HASH),
                   ready=pod_is_ready(pod) and not meta.get("deletionTimestamp"),
                   terminating=bool(meta.get("deletionTimestamp")),
                   age_seconds=max(0.0, now - created.timestamp()) if created else 0.0,
                   failure=failure, exits=exits)


def pod_views(pods: list[Body], now: float) -> tuple[PodView, ...]:
    return tuple(sorted((pod_view(p, now) for p in pods), key=lambda v: v.name))


def read_recorded(sts: Body | None) -> Recorded:
    """What the live StatefulSet says about the rollout (None: it does not exist yet)."""
    if sts is None:
        return Recorded()
    annotations = sts["metadata"].get("annotations", {})
    started = annotations.get(ROLLOUT_STARTED)
    spec_replicas = str(annotations.get(SPEC_REPLICAS, ""))
    status = sts.get("status", {})
    return Recorded(
        template_revision=template_revision(sts["spec"].get("template", {})),
        replicas=int(sts["spec"].get("replicas", 0)),
        observed=int(status.get("observedGeneration", 0)) >= int(sts["metadata"].get("generation", 0)),
        good_revision=annotations.get(GOOD_REVISION), failed_revision=annotations.get(FAILED_REVISION),
        failed_message=annotations.get(FAILED_MESSAGE),
        started=float(started) if started and started.replace(".", "", 1).isdigit() else None,
        spec_replicas=int(spec_replicas) if spec_replicas.isdigit() else None)


def _template_for(plan: Plan, desired: Body, live: Body | None) -> Any:
    """The target revision's pod template: the spec's, or the good one recorded on the StatefulSet. Never the
    live object's own dict (that is the cache's): a copy."""
    own = desired["spec"]["template"]
    if template_revision(own) == plan.target or live is None:
        return own
    recorded = live["metadata"].get("annotations", {}).get(GOOD_TEMPLATE)
    if recorded and template_revision(template := json.loads(recorded)) == plan.target:
        return template
    live_template = live["spec"].get("template", {})
    return copy.deepcopy(live_template) if template_revision(live_template) == plan.target else own


def build_rollout_statefulset(desired: Body, plan: Plan, live: Body | None, spec_replicas: int) -> Body:
    """The desired StatefulSet with the plan's template, replicas and rollout annotations; spec_replicas: the
    count the plan is for (the TGS's, or the one a deferred scale-down keeps)."""
    # desired is this reconcile's fresh build: new dicts on the changed path only (a deep copy of the whole body
    # was half of a first reconcile's CPU, which a burst of new TGSs spends ahead of their StatefulSets).
    template = _template_for(plan, desired, live)
    out = {**desired, "metadata": dict(desired["metadata"]),
           "spec": {**desired["spec"], "template": template, "replicas": plan.replicas}}
    live_annotations = (live or {}).get("metadata", {}).get("annotations", {})
    annotations: dict[str, str] = {SPEC_REPLICAS: str(spec_replicas)}
    if plan.good_revision is not None:
        annotations[GOOD_REVISION] = plan.good_revision
        if plan.good_revision == template_revision(template):
            annotations[GOOD_TEMPLATE] = json.dumps(template, sort_keys=True, separators=(",", ":"))
        elif live_annotations.get(GOOD_REVISION) == plan.good_revision and GOOD_TEMPLATE in live_annotations:
            annotations[GOOD_TEMPLATE] = live_annotations[GOOD_TEMPLATE]
    if plan.failed_revision is not None:
        annotations[FAILED_REVISION] = plan.failed_revision
        annotations[FAILED_MESSAGE] = (plan.failed_message or "")[:2000]
    if plan.started is not None:
        annotations[ROLLOUT_STARTED] = f"{plan.started:.0f}"
    if annotations:
        out["metadata"]["annotations"] = {**out["metadata"].get("annotations", {}), **annotations}
    return out
