"""Argo CD's own Lua runtime for these tests: hack/tools/argocd-lua (gopher-lua with the libraries an argocd-cm
health customization gets), built by hack/build-tools.sh, and health.lua evaluated on it."""
from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
HEALTH_LUA = ROOT / "argocd" / "resource_customizations" / "textgen.dev" / "TextGenerationService" / "health.lua"


@pytest.fixture(scope="session")
def argocd_lua() -> pathlib.Path:
    """The argocd-lua binary (hack/test.sh builds it before the tests; a developer's run without it skips)."""
    proc = subprocess.run([str(ROOT / "hack" / "build-tools.sh"), "--print-argocd-bin-dir"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip("argocd-lua is not built yet: run hack/build-tools.sh")
    return pathlib.Path(proc.stdout.strip()) / "argocd-lua"


@pytest.fixture(scope="session")
def health_of(argocd_lua: pathlib.Path) -> Callable[[dict[str, Any]], dict[str, str]]:
    """health.lua's {status, message} for one TGS object, from Argo CD's runtime."""
    def evaluate(obj: dict[str, Any]) -> dict[str, str]:
        out = subprocess.run([str(argocd_lua), "eval", str(HEALTH_LUA)], input=json.dumps(obj),
                             capture_output=True, text=True, timeout=30, check=True)
        return dict(json.loads(out.stdout))
    return evaluate
