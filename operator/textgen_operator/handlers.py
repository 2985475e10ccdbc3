"""kopf registration, kept thin: every handler only enqueues a key or records a fact.

Only event handlers are used (no on.create/on.update): they keep no state in annotations, so kopf itself
never writes to our objects; the reconciler decides every write.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from textgen_operator import GROUP, PLURAL, VERSION
from textgen_operator.config import OperatorConfig
from textgen_operator.kube import Kube
from textgen_operator.limits import request_limit
from textgen_operator.names import LABEL_MANAGED_BY, LABEL_SERVICE
from textgen_operator.cache import ObjectCache
from textgen_operator.reconciler import (ClosingNamespaces, Context, NodeCapacity, follow_failed_creates, prime,
                                         reconcile)
from textgen_operator.workqueue import Queue
from textgen_operator import FIELD_MANAGER

log = logging.getLogger("textgen_operator.handlers")
OWNED: dict[str, Any] = {LABEL_MANAGED_BY: FIELD_MANAGER, LABEL_SERVICE: kopf.PRESENT}
CHILD_RESOURCES = (("apps", "v1", "statefulsets"), ("", "v1", "services"), ("", "v1", "serviceaccounts"),
                   ("policy", "v1", "poddisruptionbudgets"), ("", "v1", "pods"),
                   ("autoscaling", "v2", "horizontalpodautoscalers"))
# Watched only with --autoscaling-provider keda: elsewhere KEDA's CRD need not exist (nor RBAC for it).
KEDA_RESOURCES = (("keda.sh", "v1alpha1", "scaledobjects"),)


@dataclass
class Runtime:
    """What the handlers share, passed through kopf's memo."""

    config: OperatorConfig
    nodes: NodeCapacity
    cache: ObjectCache = field(default_factory=ObjectCache)
    closing: ClosingNamespaces = field(default_factory=ClosingNamespaces)
    kube: Kube | None = None
    queue: Queue | None = None
    primer: asyncio.Task[None] | None = None
    watchers: list[asyncio.Task[None]] = field(default_factory=list)   # the FailedCreate Event watches


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base, switched off: it serves on.create/on.update diffs, which this operator never uses.

    By default kopf deep-copies every object on every watch event to compute that base; with only event
    handlers the copy is never read, and it was a third of the operator's CPU while 200 TGSs were created."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    return (kopf.login_with_service_account(settings=settings)
            or kopf.login_with_kubeconfig(settings=settings))


def register(registry: kopf.OperatorRegistry, keda: bool = False) -> None:
    """Registers every handler into registry (a fresh one per operator; tests make their own). keda: also
    watch KEDA ScaledObjects (--autoscaling-provider keda)."""

    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
        info = _login(settings)
        runtime = _runtime(memo)
        if info is not None and runtime.kube is None:
            runtime.kube = Kube(info, max_connections=runtime.config.max_requests_in_flight)
            # Prime the cache now, not on the first event: a burst of new TGSs must not wait for six LISTs.
            queue_of(memo)
        return info

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        runtime = _runtime(memo)
        # kopf's own progress and diff-base storage would write annotations; event handlers need neither.
        settings.persistence.finalizer = f"{GROUP}/operator"
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.posting.enabled = False            # our Events come from the reconciler, on transitions only
        settings.watching.server_timeout = 300
        # Our resources are fixed and namespaces are named exactly: no need to list CRDs or namespaces
        # (which would need cluster-wide RBAC the operator otherwise does not have).
        settings.scanning.disabled = True
        settings.peering.mandatory = runtime.config.peering_name is not None
        settings.peering.clusterwide = runtime.config.clusterwide

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        runtime = _runtime(memo)
        for watcher in runtime.watchers:
            watcher.cancel()
        await asyncio.gather(*runtime.watchers, return_exceptions=True)
        if runtime.queue is not None:
            await runtime.queue.drain()
        if runtime.kube is not None:
            await runtime.kube.close()

    def queue_of(memo: Any) -> Queue:
        """The reconcile queue, created on the first event; it waits until one LIST per kind primed the cache."""
        runtime = _runtime(memo)
        if runtime.queue is None:
            kube = runtime.kube
            assert kube is not None, "login handler has not run"
            ctx = Context(kube, runtime.cache, runtime.config, runtime.nodes, runtime.closing,
                          request_limit(runtime.config.max_requests_in_flight))
            ready = asyncio.Event()
            runtime.queue = Queue(lambda key: reconcile(ctx, key), runtime.config.max_concurrent_reconciles,
                                  runtime.config.blocked_retry_seconds, ready)
            loop = asyncio.get_running_loop()
            runtime.primer = loop.create_task(_prime_until_done(ctx, ready))
            # kopf cannot filter a watch on the server, and every Event of the cluster is far too many: the
            # StatefulSet controller's FailedCreate warnings come through a watch of our own.
            enqueue = runtime.queue.enqueue
            runtime.watchers = [loop.create_task(follow_failed_creates(ctx, namespace, enqueue))
                                for namespace in (runtime.config.namespaces or (None,))]
        return runtime.queue

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def on_tgs(event: Any, name: str, namespace: str | None, type: str, memo: Any, **_: Any) -> None:
        remember(memo, event)
        if type != "DELETED" and namespace:
            queue_of(memo).enqueue((namespace, name))

    for group, version, plural in CHILD_RESOURCES + (KEDA_RESOURCES if keda else ()):
        @kopf.on.event(group, version, plural, labels=OWNED, registry=registry, id=f"child-{plural}")
        async def on_child(event: Any, labels: Mapping[str, str], namespace: str | None, memo: Any,
                           **_: Any) -> None:
            # A child changed (status, a hand edit, a deletion): its owner re-converges.
            remember(memo, event)
            if namespace:
                queue_of(memo).enqueue((namespace, labels[LABEL_SERVICE]))

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def on_namespace(name: str, type: str, meta: kopf.Meta, memo: Any, **_: Any) -> None:
        # A namespace being deleted loses its objects in no particular order; its TGSs must not rebuild them.
        # DELETED clears the mark: a namespace created again under the same name is a new one.
        _runtime(memo).closing.update(name, type != "DELETED" and meta.get("deletionTimestamp") is not None)

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def on_node(name: str, type: str, status: kopf.Status, memo: Any, **_: Any) -> None:
        runtime = _runtime(memo)
        before = runtime.nodes.largest()
        runtime.nodes.update(name, None if type == "DELETED" else dict(status.get("allocatable", {})))
        if runtime.nodes.largest() != before and runtime.queue is not None:
            runtime.queue.requeue_blocked()


def remember(memo: Any, event: Any) -> None:
    """Keeps the cache current with a watch event (kopf's raw event: {"type": ..., "object": {...}})."""
    obj = event.get("object") if isinstance(event, Mapping) else None
    if isinstance(obj, dict) and obj.get("metadata", {}).get("name"):
        cache = _runtime(memo).cache
        if event.get("type") == "DELETED":
            cache.delete(obj)
        else:
            cache.put(obj)


async def _prime_until_done(ctx: Context, ready: asyncio.Event) -> None:
    """Primes the cache, retrying (with a growing pause) until the API server answers."""
    delay = 1.0
    while True:
        try:
            await prime(ctx)
            ready.set()
            return
        except Exception as error:   # keep trying: without a primed cache nothing can be reconciled safely
            log.warning("priming the cache failed, retrying in %.0f s: %s", delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
