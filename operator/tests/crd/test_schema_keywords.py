"""Every node of the TGS schema uses only OpenAPI/structural-schema keywords: a field indented one level off
lands beside `properties` instead of inside it, which the API server refuses ("field not declared in schema")
while the YAML still loads. (Once happened to spec.autoscaling.behavior.*.policies.)"""
from __future__ import annotations

from typing import Any

from textgen_operator.render import crd_schema

KEYWORDS = frozenset({
    "type", "description", "properties", "items", "required", "default", "enum", "minimum", "maximum",
    "minLength", "maxLength", "minItems", "maxItems", "pattern", "format", "additionalProperties", "nullable",
    "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-int-or-string", "x-kubernetes-map-type", "anyOf", "oneOf",
    "allOf", "not", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems",
})


def misplaced(schema: dict[str, Any], path: str) -> list[str]:
    found = [f"{path}.{key}" for key in schema if key not in KEYWORDS]
    for name, sub in schema.get("properties", {}).items():
        found += misplaced(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += misplaced(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += misplaced(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_nodes_hold_only_schema_keywords(crd: dict[str, Any]) -> None:
    assert misplaced(crd_schema(crd), "") == []
