"""Refreshes argocd/'s testdata from a real run, then the expected messages; the expected statuses stay as written.

    .venv/bin/python argocd/refresh-testdata.py      (cluster settings as for any e2e run: e2e/README.md)
    .venv/bin/python argocd/refresh-testdata.py --from DIR   (captures of an earlier run; no new run)

Runs e2e/test_argocd_health.py with TEXTGEN_ARGOCD_CAPTURE (the first TGS version of each stage, health and
reason, managedFields stripped), replaces every file health_test.yaml names with the new capture, and rewrites an
entry's message from Argo CD's runtime (argocd-lua) only where the status is still the expected one: review the
result with `git diff`. Exit 1 when a status changed (that file and entry stay as they were). A named capture the
run did not save (a short-lived state, e.g. ReplicasNotReady while the StatefulSet controller catches up, that a
run may not hit) keeps its previous file and message, and is reported.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HEALTH_DIR = ROOT / "argocd" / "resource_customizations" / "textgen.dev" / "TextGenerationService"
HEADER_LINES = 3      # health_test.yaml's comment header, kept as written


def argocd_lua() -> Path:
    tools = str(ROOT / "hack" / "build-tools.sh")
    found = subprocess.run([tools, "--print-argocd-bin-dir"], capture_output=True, text=True)
    if found.returncode != 0:
        subprocess.run([tools], check=True, stdout=subprocess.DEVNULL)
        found = subprocess.run([tools, "--print-argocd-bin-dir"], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip()) / "argocd-lua"


def capture(into: Path) -> None:
    env = {**os.environ, "TEXTGEN_ARGOCD_CAPTURE": str(into)}
    subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "-p", "no:cacheprovider", "-q",
                    str(ROOT / "e2e" / "test_argocd_health.py")], env=env, check=True, cwd=ROOT)


def refresh(captured: Path) -> tuple[list[str], list[str]]:
    """Copies the captures and rewrites messages; returns (changed statuses, captures missing)."""
    test_file = HEALTH_DIR / "health_test.yaml"
    text = test_file.read_text()
    spec = yaml.safe_load(text)
    binary, changed, missing = argocd_lua(), [], []
    for test in spec["tests"]:
        source = captured / Path(test["inputPath"]).name
        if not source.is_file():
            missing.append(f"{test['inputPath']}: this run saved no such capture; the previous one is kept")
            continue
        out = subprocess.run([str(binary), "eval", str(HEALTH_DIR / "health.lua")], stdin=source.open(),
                             capture_output=True, text=True, check=True)
        health = json.loads(out.stdout)
        if health["status"] != test["healthStatus"]["status"]:
            changed.append(f"{test['inputPath']}: now {health}, expected {test['healthStatus']['status']}")
            continue
        shutil.copyfile(source, HEALTH_DIR / test["inputPath"])
        test["healthStatus"]["message"] = health["message"]
    header = "".join(text.splitlines(keepends=True)[:HEADER_LINES])
    test_file.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=100000))
    return changed, missing


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="argocd-capture.") as tmp:
        captured = Path(sys.argv[2]) if sys.argv[1:2] == ["--from"] and len(sys.argv) == 3 else Path(tmp)
        if len(sys.argv) > 1 and captured == Path(tmp):
            sys.exit(f"usage: {sys.argv[0]} [--from CAPTURE_DIR]")
        if captured == Path(tmp):
            capture(captured)
        changed, missing = refresh(captured)
        print("captured:", " ".join(sorted(p.name for p in captured.iterdir())), file=sys.stderr)
    for line in missing + changed:
        print(f"refresh-testdata: {line}", file=sys.stderr)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
