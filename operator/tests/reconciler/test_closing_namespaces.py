"""A namespace being deleted gets no writes: its TGSs must not rebuild the children the namespace controller
removes, nor patch statuses of objects being torn down.

The API client is a recording stand-in (the real API server is exercised by e2e/test_operator_lifecycle.py,
which counts writes in its audit log); here it answers the way the API server answers in a terminating
namespace: a create is refused with 403 "because it is being terminated".
"""
from __future__ import annotations

import asyncio
from typing import Any

from textgen_operator.cache import ObjectCache
from textgen_operator.config import OperatorConfig
from textgen_operator.kube import ApiError
from textgen_operator.reconciler import ClosingNamespaces, Context, NodeCapacity, reconcile

TERMINATING = ('statefulsets "demo" is forbidden: unable to create new content in namespace ns '
               "because it is being terminated")


class RefusingKube:
    """Records every call; every write is refused as in a namespace being deleted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def exists(self, *args: Any) -> bool:
        self.calls.append("exists")
        return True

    async def get(self, *args: Any) -> None:
        self.calls.append("get")

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"apply {obj['kind']}")
        raise ApiError(403, TERMINATING, "Forbidden")

    async def patch_status(self, *args: Any) -> None:
        self.calls.append("patch_status")

    async def create_event(self, *args: Any) -> None:
        self.calls.append("create_event")


def context(kube: RefusingKube, tgs: dict[str, Any]) -> Context:
    cache = ObjectCache()
    cache.put(tgs)
    nodes = NodeCapacity()
    nodes.update("gpu-0", {"nvidia.com/gpu": "8"})
    return Context(kube, cache, OperatorConfig(), nodes, ClosingNamespaces())  # type: ignore[arg-type]


def test_a_tgs_in_a_namespace_being_deleted_sends_nothing(make_tgs: Any) -> None:
    tgs = make_tgs()
    kube = RefusingKube()
    ctx = context(kube, tgs)
    ctx.closing.update(tgs["metadata"]["namespace"], True)
    assert asyncio.run(reconcile(ctx, (tgs["metadata"]["namespace"], "demo"))) is False
    assert kube.calls == []


def test_the_first_refusal_marks_the_namespace_and_stops_every_later_write(make_tgs: Any) -> None:
    tgs = make_tgs()
    ns = tgs["metadata"]["namespace"]
    kube = RefusingKube()
    ctx = context(kube, tgs)
    asyncio.run(reconcile(ctx, (ns, "demo")))
    assert kube.calls and all(c.startswith("apply") for c in kube.calls), kube.calls   # no status, no Event
    assert ns in ctx.closing
    kube.calls.clear()
    asyncio.run(reconcile(ctx, (ns, "demo")))
    assert kube.calls == []
    ctx.closing.update(ns, False)        # the namespace's DELETED event: a namespace of that name is new again
    asyncio.run(reconcile(ctx, (ns, "demo")))
    assert kube.calls
