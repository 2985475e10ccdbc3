"""Only textgen_server.gaudi.backend may import the Habana stack (habana_frameworks, optimum.habana, INC).

A fresh interpreter puts a finder first on sys.meta_path that refuses those names (as on any machine without the
Habana plugin) and records each attempt, imports every module of textgen_server except the backend, then the
backend. Every other module must import without trying, and the backend must fail on habana_frameworks.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import importlib, json, pkgutil, sys
    BLOCKED = ("habana_frameworks", "optimum", "neural_compressor")
    attempts = []

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import textgen_server
    failures, names = {}, []
    for info in pkgutil.walk_packages(textgen_server.__path__, "textgen_server."):
        if info.name == "textgen_server.gaudi.backend":
            continue
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception as error:
            failures[info.name] = repr(error)
    before_backend = list(attempts)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    try:
        importlib.import_module("textgen_server.gaudi.backend")
        backend = "imported"
    except ModuleNotFoundError as error:
        backend = error.name
    print(json.dumps({"names": names, "failures": failures, "loaded": loaded, "attempts": before_backend,
                      "backend": backend}))
''')


def test_only_the_backend_imports_the_habana_stack() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "textgen_server.gaudi.config" in report["names"] and "textgen_server.shard.runner" in report["names"]
    assert len(report["names"]) > 40                     # the walk really covered the package
    assert report["failures"] == {}
    assert report["attempts"] == [] and report["loaded"] == []
    assert report["backend"] == "habana_frameworks"      # its first import, refused as without the plugin
