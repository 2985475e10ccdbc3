"""The CRD: descriptions everywhere, the contract fields of DESIGN.md, examples that fit the schema's shape."""
from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from textgen_operator.render import crd_schema

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))


def walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        found += walk(sub, f"{path}.{key}")
    if "items" in schema:
        found += walk(schema["items"], f"{path}[]")
    return found


def test_every_field_is_described_and_typed(crd: dict[str, Any]) -> None:
    nodes = walk(crd_schema(crd), "")
    undocumented = [p for p, s in nodes if p and not p.endswith(".metadata") and "description" not in s]
    untyped = [p for p, s in nodes if "type" not in s and not s.get("x-kubernetes-int-or-string")]
    assert undocumented == [] and untyped == []


def test_names_subresources_and_columns(crd: dict[str, Any]) -> None:
    assert crd["spec"]["names"]["shortNames"] == ["tgs"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas",
                                                "statusReplicasPath": ".status.replicas",
                                                "labelSelectorPath": ".status.selector"}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Model", "Accelerator", "Shards", "Ready", "Age"} <= columns


def check_shape(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Unknown fields and enum violations (the API server would prune or reject them)."""
    errors = []
    if isinstance(value, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, sub in value.items():
            if key not in schema["properties"]:
                errors.append(f"{path}.{key}: unknown field")
            else:
                errors += check_shape(schema["properties"][key], sub, f"{path}.{key}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    return errors


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_use_only_known_fields(crd: dict[str, Any], example: pathlib.Path) -> None:
    body = yaml.safe_load(example.read_text())
    assert check_shape(crd_schema(crd)["properties"]["spec"], body["spec"], "spec") == []
