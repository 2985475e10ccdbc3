"""The pure layers import no I/O: builders, plan, status, problems and names never touch kopf or the network."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "textgen_operator"
PURE = ["builders", "spec.py", "plan.py", "status.py", "problems.py", "names.py", "quantities.py", "config.py",
        "cache.py", "workqueue.py", "pod_health.py", "events.py", "rollout/model.py", "rollout/planner.py",
        "rollout/words.py", "rollout/statefulset.py", "rollout/step.py"]
FORBIDDEN = ("kopf", "aiohttp", "kubernetes", "textgen_operator.kube", "textgen_operator.reconciler",
             "textgen_operator.handlers", "torch", "textgen_server")


def imports_of(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("target", PURE)
def test_pure_modules_import_no_io(target: str) -> None:
    files = sorted((PACKAGE / target).glob("*.py")) if (PACKAGE / target).is_dir() else [PACKAGE / target]
    for path in files:
        bad = {name for name in imports_of(path) if name.startswith(FORBIDDEN)}
        assert not bad, f"{path.name} imports {sorted(bad)}; keep I/O in kube.py / reconciler.py"
