"""One reconcile of one TGS (read -> plan -> apply -> status), and the queue that runs them.

Level-triggered: every event (the TGS, a child, a pod, a node) only enqueues the owner's key; the reconcile
reads current state and converges. Same inputs -> no writes.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from textgen_operator import FIELD_MANAGER, GROUP, VERSION
from textgen_operator.autoscaling_status import autoscaling_condition, autoscaling_problems
from textgen_operator.builders import build_desired
from textgen_operator.builders.autoscaling import AUTOSCALER_KINDS, stale_autoscaler_kinds
from textgen_operator.cache import ObjectCache, api_kind
from textgen_operator.config import OperatorConfig
from textgen_operator.events import FIELD_SELECTOR, current_failed_creates, failed_create_from_event
from textgen_operator.kube import ApiError, Kube
from textgen_operator.limits import PriorityLimit, request_limit
from textgen_operator.metrics import APPLIES, WATCH_RESTARTS
from textgen_operator.names import LABEL_MANAGED_BY, Body
from textgen_operator.plan import Urgency, apply_urgency, object_key, plan_applies
from textgen_operator.problems import Problem, find_problems
from textgen_operator.rollout.act import act as act_rollout
from textgen_operator.rollout.statefulset import pod_views, rollout_spec
from textgen_operator.rollout.step import Step, plan_step
from textgen_operator.spec import tgs_spec
from textgen_operator.status import Transition, build_status, build_transitions, status_changed
from textgen_operator.tgs_metrics import forget as forget_tgs_series
from textgen_operator.tgs_metrics import publish as publish_tgs_series
from textgen_operator.tgs_metrics import tgs_series
from textgen_operator.workqueue import Key

log = logging.getLogger("textgen_operator.reconciler")
TGS_KIND = f"{GROUP}/{VERSION}/TextGenerationService"


@dataclass
class NodeCapacity:
    """Most devices of each accelerator resource any node offers, kept current by node events."""

    per_node: dict[str, dict[str, int]] = field(default_factory=dict)
    known: bool = False

    def update(self, node_name: str, allocatable: dict[str, str] | None) -> None:
        devices = {k: int(v) for k, v in (allocatable or {}).items() if k in ("nvidia.com/gpu", "habana.ai/gaudi")}
        if allocatable is None:
            self.per_node.pop(node_name, None)
        else:
            self.per_node[node_name] = devices
        self.known = True

    def largest(self) -> dict[str, int] | None:
        """resource -> most devices on one node; None until the node list has been seen."""
        if not self.known:
            return None
        largest: dict[str, int] = {}
        for devices in self.per_node.values():
            for resource, count in devices.items():
                largest[resource] = max(largest.get(resource, 0), count)
        return largest


@dataclass
class ClosingNamespaces:
    """Namespaces being deleted: the operator writes nothing there (no re-create of children the namespace
    controller removes, no status or Event for objects being torn down). Fed by namespace watch events and,
    for a namespace whose event has not arrived yet, by the API server's "being terminated" refusal."""

    names: set[str] = field(default_factory=set)

    def update(self, name: str, terminating: bool) -> None:
        (self.names.add if terminating else self.names.discard)(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _apply_one(ctx: Context, obj: Body, urgency: Urgency) -> list[Problem]:
    """Applies one object; an API rejection becomes a problem the user sees, not a crash loop."""
    try:
        async with ctx.requests.slot(urgency):
            applied = await ctx.kube.apply(obj)
        ctx.cache.put(applied)
        APPLIES.labels(kind=obj["kind"]).inc()
        return []
    except ApiError as error:
        if error.status in (401, 403, 404, 429) or error.status >= 500:
            raise       # not about the object: the queue retries the reconcile
        return [Problem("ApplyRejected", f"the API server rejected {obj['kind']} {obj['metadata']['name']}: "
                                         f"{error.message}. Fix the TextGenerationService spec accordingly "
                                         "(immutable fields such as spec.cache need a new object)")]


async def _apply_all(ctx: Context, to_apply: list[tuple[Body, Urgency]]) -> list[Problem]:
    """All at once: none of the children needs another to exist first (a pod the StatefulSet controller tries
    to create before its ServiceAccount exists is retried by that controller). The request limit sends them
    out by urgency, across every reconcile in flight."""
    found = await asyncio.gather(*(_apply_one(ctx, obj, urgency) for obj, urgency in to_apply))
    return [p for problems in found for p in problems]


def _event(tgs: Body, transition: Transition, now: str) -> Body:
    meta = tgs["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TextGenerationService",
                           "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                           "resourceVersion": meta.get("resourceVersion", "")},
        "type": transition.event_type, "reason": transition.reason, "message": transition.message[:1024],
        "source": {"component": "textgen-operator"}, "reportingComponent": "textgen-operator",
        "reportingInstance": "textgen-operator", "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def _is_gone(error: ApiError) -> bool:
    """The TGS or its namespace is going away: nothing left to converge, and retrying only adds writes."""
    return error.status == 404 or (error.status == 403 and "being terminated" in error.message)


@dataclass
class Context:
    """What every reconcile needs."""

    kube: Kube
    cache: ObjectCache
    config: OperatorConfig
    nodes: NodeCapacity
    closing: ClosingNamespaces = field(default_factory=ClosingNamespaces)
    requests: PriorityLimit = field(default_factory=lambda: request_limit(OperatorConfig.max_requests_in_flight))


async def reconcile(ctx: Context, key: Key) -> bool:
    """Converges one TGS. Returns True when it is blocked on something outside it (retry later)."""
    if key[0] in ctx.closing:
        return False     # the namespace is being deleted: every write there would be refused or wasted
    try:
        return await _reconcile(ctx, key)
    except ApiError as error:
        if _is_gone(error):
            # The API server's words are not repeated: its refusal would read like an RBAC denial in the log.
            closing = error.status == 403
            log.info("%s/%s is going away (%s): no more writes for it", key[0], key[1],
                     "its namespace is being deleted" if closing else "not found")
            if closing:
                ctx.closing.update(key[0], True)
            forget_tgs_series(key)
            return False
        raise


async def _load_tgs(ctx: Context, key: Key) -> Body | None:
    tgs = ctx.cache.get(TGS_KIND, *key)
    if tgs is None:      # not seen by a watch yet (or gone): ask once
        tgs = await ctx.kube.get(TGS_KIND, *key)
        if tgs is not None:
            ctx.cache.put(tgs)
    return tgs


async def _converge_autoscaler(ctx: Context, tgs: Body, desired: list[Body]) -> Body | None:
    """Deletes the autoscalers of ours that spec.autoscaling no longer asks for (removed, or another provider):
    spec.replicas rules again. Returns the live autoscaler the spec asks for, if any (its status feeds ours)."""
    namespace, name, uid = tgs["metadata"]["namespace"], tgs["metadata"]["name"], tgs["metadata"]["uid"]
    wanted = next((o for o in desired if api_kind(o) in AUTOSCALER_KINDS), None)
    for kind in stale_autoscaler_kinds(wanted):
        live = ctx.cache.get(kind, namespace, name)
        if live is not None and any(ref.get("uid") == uid for ref in live["metadata"].get("ownerReferences", [])):
            async with ctx.requests.slot(Urgency.REPAIR):
                await ctx.kube.delete(live)
            ctx.cache.delete(live)
    return ctx.cache.get(api_kind(wanted), namespace, name) if wanted else None


async def _act_rollout(ctx: Context, tgs: Body, rollout: Step) -> None:
    now = _now()

    async def send(event_type: str, reason: str, message: str) -> None:
        await ctx.kube.create_event(_event(tgs, Transition(event_type, reason, message), now))

    await act_rollout(ctx.kube, ctx.cache, ctx.requests, tgs["metadata"]["namespace"], rollout.plan,
                      rollout.recorded, time.time(), send)


async def _reconcile(ctx: Context, key: Key) -> bool:
    namespace, name = key
    tgs = await _load_tgs(ctx, key)
    if tgs is None or tgs["metadata"].get("deletionTimestamp"):
        forget_tgs_series(key)    # its alerting series describe a TGS that is going away
        return False    # garbage collection removes the children through their owner references
    # The rollout planner decides the StatefulSet's template, replicas and rollout annotations (textgen_operator/
    # rollout); its pod deletions follow the applies.
    rollout = plan_step(tgs, build_desired(tgs, ctx.config), ctx.cache.get("apps/v1/StatefulSet", namespace, name),
                        ctx.cache.pods_of(namespace, name), time.time())
    desired = rollout.desired
    observed = {object_key(o): ctx.cache.get(api_kind(o), namespace, o["metadata"]["name"]) for o in desired}
    ref = tgs["spec"]["model"].get("tokenSecretRef")
    secret_exists = await ctx.kube.exists("v1/Secret", namespace, ref["name"]) if ref else None
    problems = find_problems(tgs, secret_exists, ctx.nodes.largest())
    problems += autoscaling_problems(tgs_spec(tgs), ctx.config)
    if not any(p.blocking for p in problems):
        to_apply = [(obj, apply_urgency(obj, observed[object_key(obj)])) for obj in plan_applies(desired, observed)]
        problems += await _apply_all(ctx, to_apply)
        await _act_rollout(ctx, tgs, rollout)
    problems += rollout.problems
    autoscaler = await _converge_autoscaler(ctx, tgs, desired)
    sts = ctx.cache.get("apps/v1/StatefulSet", namespace, name)
    pods = ctx.cache.pods_of(namespace, name)
    accounts = {o["metadata"]["name"] for o in desired if o["kind"] == "ServiceAccount"
                and ctx.cache.get("v1/ServiceAccount", namespace, o["metadata"]["name"]) is not None}
    failed = current_failed_creates(ctx.cache.failed_creates_of(namespace, name), sts, pods, accounts)
    now = _now()
    scaling = autoscaling_condition(tgs, tgs_spec(tgs), autoscaler)
    status = build_status(tgs, sts, pods, problems, now, failed, [scaling] if scaling else [], rollout.plan)
    publish_tgs_series(key, tgs_series(tgs, status, rollout.plan, pod_views(pods, time.time()),
                                       rollout_spec(tgs).warmup_timeout_seconds))
    old = tgs.get("status", {})
    if status_changed(old, status):
        async with ctx.requests.slot(Urgency.STATUS):
            await ctx.kube.patch_status(namespace, name, status)
        ctx.cache.set_status(TGS_KIND, namespace, name, status)
        for transition in build_transitions(old.get("conditions", []), status["conditions"]):
            async with ctx.requests.slot(Urgency.EVENT):
                await ctx.kube.create_event(_event(tgs, transition, now))
    # A rollout waiting on a warmup timeout is looked at again even if no pod changes (blocked-retry period).
    return any(p.blocking for p in problems) or rollout.plan.recheck_seconds is not None


CHILD_KINDS = ("v1/ServiceAccount", "v1/Service", "policy/v1/PodDisruptionBudget", "apps/v1/StatefulSet", "v1/Pod",
               "autoscaling/v2/HorizontalPodAutoscaler")


async def prime(ctx: Context) -> None:
    """Fills the cache with one LIST per kind, so that a cache miss afterwards means "does not exist"."""
    namespaces = ctx.config.namespaces
    for tgs in await ctx.kube.list_all(TGS_KIND, namespaces, ""):
        ctx.cache.put(tgs)
    keda = ("keda.sh/v1alpha1/ScaledObject",) if ctx.config.autoscaling_provider == "keda" else ()
    for kind in CHILD_KINDS + keda:
        for obj in await ctx.kube.list_all(kind, namespaces, f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"):
            ctx.cache.put(obj)
    log.info("cache primed with %d objects", len(ctx.cache))


def record_event(cache: ObjectCache, namespace: str | None, kind: str, event: Body) -> Key | None:
    """Keeps the cache's FailedCreate records current with one item of the Event watch; returns the TGS to
    reconcile (the StatefulSet is named after it), or None when the Event is not about one of ours."""
    if kind == "RESET":
        cache.forget_failed_creates(namespace)
        return None
    failure = failed_create_from_event(event)
    if failure is None:
        return None
    if kind == "DELETED":
        cache.delete_failed_create(failure.namespace, failure.statefulset, failure.event)
    else:
        cache.put_failed_create(failure)
    known = cache.get("apps/v1/StatefulSet", failure.namespace, failure.statefulset) is not None
    return (failure.namespace, failure.statefulset) if known else None


async def follow_failed_creates(ctx: Context, namespace: str | None, enqueue: Callable[[Key], None]) -> None:
    """Follows the StatefulSet controller's FailedCreate Events (server-side field selector, so other Events
    never reach the operator) in one namespace (None: all), until cancelled; resumes after any error."""
    delay = 1.0
    while True:
        try:
            async for kind, event in ctx.kube.follow("v1/Event", namespace, FIELD_SELECTOR):
                delay = 1.0
                key = record_event(ctx.cache, namespace, kind, event)
                if key is not None:
                    enqueue(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:      # the watch must outlive API restarts and network errors
            WATCH_RESTARTS.labels(kind=type(error).__name__).inc()
            log.warning("the FailedCreate Event watch failed, resuming in %.0f s: %s", delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
