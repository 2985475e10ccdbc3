"""The rendered manifests of every example are pinned; hack/update-golden.sh regenerates them."""
from __future__ import annotations

import pathlib

import pytest
import yaml

from textgen_operator.config import OperatorConfig
from textgen_operator.render import as_live, render

GOLDEN = pathlib.Path(__file__).parent / "golden"
ROOT = pathlib.Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "textgen.dev_textgenerationservices.yaml"
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_renders_as_golden(example: pathlib.Path) -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    rendered = render(as_live(yaml.safe_load(example.read_text()), crd), OperatorConfig())
    golden = GOLDEN / example.name
    assert golden.exists(), f"no golden file for {example.name}; run hack/update-golden.sh"
    assert rendered == golden.read_text(), (
        f"{example.name} renders differently from {golden}; if the change is intended, run "
        "hack/update-golden.sh and review the diff")


def test_every_golden_file_has_an_example() -> None:
    stale = {p.name for p in GOLDEN.glob("*.yaml")} - {p.name for p in EXAMPLES}
    assert not stale, f"golden files without an example: {sorted(stale)}; delete them"
