"""The typed spec view applies exactly the CRD's `default:` values, read from the CRD's YAML (they cannot drift)."""
from __future__ import annotations

import re
from typing import Any

import pytest

from textgen_operator.render import crd_schema
from textgen_operator.spec import parse_spec

# Objects that must exist for their defaulted children to be read, with their required fields only.
MINIMAL_SPEC: dict[str, Any] = {
    "model": {"id": "org/model", "tokenSecretRef": {"name": "hf"}},
    "accelerator": {"type": "cpu"},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metric": {}},
}


def defaults(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path under spec, default) for every field of the schema that declares a default."""
    found = [(path, schema["default"])] if "default" in schema else []
    for key, sub in schema.get("properties", {}).items():
        found += defaults(sub, (*path, key))
    return found


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def view_value(view: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        view = getattr(view, snake(name))
    return view


def spec_defaults(crd: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    return defaults(crd_schema(crd)["properties"]["spec"])


def test_the_crd_declares_defaults(crd: dict[str, Any]) -> None:
    paths = {".".join(p) for p, _ in spec_defaults(crd)}
    assert {"accelerator.count", "cache.size", "cache.mode", "drain.gracePeriodSeconds", "replicas"} <= paths


def test_every_crd_default_is_the_views_default(crd: dict[str, Any]) -> None:
    """A body without the defaults (as written by hand, or stored before a default existed) reads as the API
    server would have defaulted it."""
    view = parse_spec(MINIMAL_SPEC)
    mismatches = [(".".join(path), default, view_value(view, path)) for path, default in spec_defaults(crd)
                  if view_value(view, path) != default]
    assert mismatches == [], "spec.py's defaults differ from the CRD's (path, CRD, view): fix spec.py"


@pytest.mark.parametrize("field, value, attribute, expected", [
    (("accelerator", "count"), 4, ("accelerator", "count"), 4),
    (("cache", "size"), "2Gi", ("cache", "size"), "2Gi"),
    (("drain", "gracePeriodSeconds"), 5, ("drain", "gracePeriodSeconds"), 5),
    (("model", "revision"), "", ("model", "revision"), None),       # empty means the default branch
])
def test_given_values_win_over_defaults(field: tuple[str, str], value: Any, attribute: tuple[str, ...],
                                        expected: Any) -> None:
    spec = {**MINIMAL_SPEC, field[0]: {**MINIMAL_SPEC.get(field[0], {}), field[1]: value}}
    assert view_value(parse_spec(spec), attribute) == expected
