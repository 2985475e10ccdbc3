"""Preview what the operator would create for a TextGenerationService file, without a cluster.

    python -m textgen_operator.render crds/examples/llama-3.1-8b-gaudi.yaml [--crd crds/<crd>.yaml]

With --crd, the CRD's schema defaults are applied first, as the API server would. Also renders the golden
files pinned by operator/tests/builders (hack/update-golden.sh).
"""
from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from textgen_operator.builders import build_desired
from textgen_operator.config import OperatorConfig
from textgen_operator.names import Body

PLACEHOLDER_NAMESPACE = "default"
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def apply_schema_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of value with the structural schema's defaults filled in (what the API server does on write)."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_schema_defaults(sub, value[key])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_schema_defaults(schema["items"], v) for v in value]
    return value


def crd_schema(crd: Body) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD's storage version."""
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def as_live(tgs: Body, crd: Body | None) -> Body:
    """An example file as the API server would return it: defaults applied, namespace and uid set."""
    body = apply_schema_defaults(crd_schema(crd), tgs) if crd else copy.deepcopy(tgs)
    body["metadata"].setdefault("namespace", PLACEHOLDER_NAMESPACE)
    body["metadata"].setdefault("uid", PLACEHOLDER_UID)
    return body


def render(tgs: Body, config: OperatorConfig) -> str:
    """All children of one TGS as a multi-document YAML string (stable key order)."""
    return str(yaml.safe_dump_all(build_desired(tgs, config), sort_keys=True, default_flow_style=False))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m textgen_operator.render", description=__doc__)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--crd", help="CRD file whose schema defaults to apply first")
    args = parser.parse_args(argv)
    crd = yaml.safe_load(open(args.crd)) if args.crd else None
    for path in args.files:
        with open(path) as f:
            sys.stdout.write(render(as_live(yaml.safe_load(f), crd), OperatorConfig()))


if __name__ == "__main__":
    main()
