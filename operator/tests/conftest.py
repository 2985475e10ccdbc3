"""Shared helpers for the operator's unit tests: examples as the API server would return them."""
from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from textgen_operator.render import as_live

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "textgen.dev_textgenerationservices.yaml"
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


@pytest.fixture
def make_tgs(crd: dict[str, Any]) -> Any:
    """make_tgs(**spec_overrides) -> a live-looking TGS body (CRD defaults applied)."""

    def make(name: str = "demo", **spec: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"model": {"id": "org/model"}, "accelerator": {"type": "nvidia", "count": 1}}
        base.update(copy.deepcopy(spec))
        body = {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService",
                "metadata": {"name": name, "namespace": "ns", "uid": "uid-1", "generation": 1}, "spec": base}
        return as_live(body, crd)

    return make
