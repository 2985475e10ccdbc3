"""kopf registration, kept thin: every handler only enqueues a key or records a fact.

Only event handlers are used (no on.create/on.update): they keep no state in annotations, so kopf itself
never writes to our objects; the reconciler decides every write.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from textgen_operator import GROUP, PLURAL, VERSION
from textgen_operator.config import OperatorConfig
from textgen_operator.kube import Kube
from textgen_operator.names import LABEL_MANAGED_BY, LABEL_SERVICE
from textgen_operator.reconciler import NodeCapacity, Queue, reconcile
from textgen_operator import FIELD_MANAGER

log = logging.getLogger("textgen_operator.handlers")
OWNED: dict[str, Any] = {LABEL_MANAGED_BY: FIELD_MANAGER, LABEL_SERVICE: kopf.PRESENT}
CHILD_RESOURCES = (("apps", "v1", "statefulsets"), ("", "v1", "services"), ("", "v1", "serviceaccounts"),
                   ("policy", "v1", "poddisruptionbudgets"), ("", "v1", "pods"))


@dataclass
class Runtime:
    """What the handlers share, passed through kopf's memo."""

    config: OperatorConfig
    nodes: NodeCapacity
    kube: Kube | None = None
    queue: Queue | None = None


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def _login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    return (kopf.login_with_service_account(settings=settings)
            or kopf.login_with_kubeconfig(settings=settings))


def register(registry: kopf.OperatorRegistry) -> None:
    """Registers every handler into registry (a fresh one per operator; tests make their own)."""

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
        info = _login(settings)
        runtime = _runtime(memo)
        if info is not None and runtime.kube is None:
            runtime.kube = Kube(info)
        return info

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        runtime = _runtime(memo)
        # kopf's own progress and diff-base storage would write annotations; event handlers need neither.
        settings.persistence.finalizer = f"{GROUP}/operator"
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
        if runtime.queue is not None:
            await runtime.queue.drain()
        if runtime.kube is not None:
            await runtime.kube.close()

    def queue_of(memo: Any) -> Queue:
        runtime = _runtime(memo)
        if runtime.queue is None:
            kube, config, nodes = runtime.kube, runtime.config, runtime.nodes
            assert kube is not None, "login handler has not run"
            runtime.queue = Queue(lambda key: reconcile(kube, config, nodes, key),
                                  config.max_concurrent_reconciles, config.blocked_retry_seconds)
        return runtime.queue

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def on_tgs(name: str, namespace: str | None, type: str, memo: Any, **_: Any) -> None:
        if type != "DELETED" and namespace:
            queue_of(memo).enqueue((namespace, name))

    for group, version, plural in CHILD_RESOURCES:
        @kopf.on.event(group, version, plural, labels=OWNED, registry=registry, id=f"child-{plural}")
        async def on_child(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
            # A child changed (status, a hand edit, a deletion): its owner re-converges.
            if namespace:
                queue_of(memo).enqueue((namespace, labels[LABEL_SERVICE]))

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def on_node(name: str, type: str, status: kopf.Status, memo: Any, **_: Any) -> None:
        runtime = _runtime(memo)
        before = runtime.nodes.largest()
        runtime.nodes.update(name, None if type == "DELETED" else dict(status.get("allocatable", {})))
        if runtime.nodes.largest() != before and runtime.queue is not None:
            runtime.queue.requeue_blocked()
