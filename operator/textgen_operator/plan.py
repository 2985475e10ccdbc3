"""Desired vs observed: which children need a server-side apply, and how urgently. Pure.

An apply is sent only when the live object no longer carries every field we want (a subset test, so fields
that the API server defaults or other managers own never cause writes). Same inputs -> no writes; a hand edit
of a field we set -> one apply that puts it back.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Any

from textgen_operator.names import Body
from textgen_operator.quantities import parse_quantity


def _scalar_equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # The API server canonicalises quantities ("1024Mi" may come back as "1Gi"); compare their values.
    if isinstance(want, (str, int)) and isinstance(have, (str, int)) and not isinstance(want, bool):
        a, b = parse_quantity(want), parse_quantity(have)
        return a is not None and a == b
    return False


def is_subset(want: Any, have: Any) -> bool:
    """True when every field of `want` is present in `have` with an equal value (lists element by element)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(want) == len(have)
                and all(is_subset(w, h) for w, h in zip(want, have)))
    return _scalar_equal(want, have)


def object_key(obj: Body) -> tuple[str, str]:
    """(apiVersion/kind, name): identifies a child within one TGS's namespace."""
    return f"{obj['apiVersion']}/{obj['kind']}", obj["metadata"]["name"]


def plan_applies(desired: list[Body], observed: dict[tuple[str, str], Body | None]) -> list[Body]:
    """The desired objects that are missing or drifted, in desired order."""
    return [obj for obj in desired
            if (live := observed.get(object_key(obj))) is None or not is_subset(obj, live)]


class Urgency(IntEnum):
    """The order in which the operator's API requests go out when more are ready than may be in flight.

    What a new TGS's pods wait on comes first: the StatefulSet controller creates pods as soon as the
    StatefulSet exists, and admission refuses them until their ServiceAccount does. A burst of new TGSs thus
    gets its StatefulSets before any Service (whose ClusterIP allocation is the API server's slowest create),
    any repair of an existing object, any status patch or Event."""

    BRING_UP = 0      # the limits module's URGENT: may use the reserved slots
    CREATE = 1
    REPAIR = 2
    STATUS = 3
    EVENT = 4


BRING_UP_KINDS = frozenset({"StatefulSet", "ServiceAccount"})


def apply_urgency(obj: Body, live: Body | None) -> Urgency:
    """How urgent applying obj is, given the live object (None: it does not exist yet)."""
    if live is None:
        return Urgency.BRING_UP if obj["kind"] in BRING_UP_KINDS else Urgency.CREATE
    return Urgency.REPAIR
