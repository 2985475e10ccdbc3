"""Desired vs observed: which children need a server-side apply. Pure.

An apply is sent only when the live object no longer carries every field we want (a subset test, so fields
that the API server defaults or other managers own never cause writes). Same inputs -> no writes; a hand edit
of a field we set -> one apply that puts it back.
"""
from __future__ import annotations

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
