"""argocd/'s health.lua on Argo CD's own Lua runtime (hack/tools/argocd-lua: gopher-lua v1.1.2 with the libraries
and globals Argo CD v3.5.1 opens), over health_test.yaml, whose objects are real TGS objects an e2e run produced
(e2e/test_argocd_health.py). Both library sets Argo CD uses: a plain argocd-cm customization (no string, math)
and useOpenLibs / Argo CD's own TestLuaHealthScript."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
HEALTH_DIR = ROOT / "argocd" / "resource_customizations" / "textgen.dev" / "TextGenerationService"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended"}



def run_tests(binary: pathlib.Path, directory: pathlib.Path, *flags: str) -> tuple[int, list[dict[str, object]], str]:
    proc = subprocess.run([str(binary), *flags, "test", str(directory)], capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


@pytest.mark.parametrize("flags", [(), ("-use-open-libs",)], ids=["argocd-cm", "open-libs"])
def test_every_test_object_gets_its_expected_health(flags: tuple[str, ...], argocd_lua: pathlib.Path) -> None:
    code, results, stderr = run_tests(argocd_lua, HEALTH_DIR, *flags)
    expected = yaml.safe_load((HEALTH_DIR / "health_test.yaml").read_text())["tests"]
    assert code == 0, [r for r in results if not r["ok"]] or stderr
    assert len(results) == len(expected) and all(r["ok"] for r in results), results


def test_the_tests_cover_every_status_and_every_testdata_file() -> None:
    tests = yaml.safe_load((HEALTH_DIR / "health_test.yaml").read_text())["tests"]
    assert {t["healthStatus"]["status"] for t in tests} == STATUSES
    used = {t["inputPath"] for t in tests}
    on_disk = {f"testdata/{p.name}" for p in (HEALTH_DIR / "testdata").glob("*.yaml")}
    assert used == on_disk, (used ^ on_disk)


def test_a_wrong_expectation_is_reported(tmp_path: pathlib.Path, argocd_lua: pathlib.Path) -> None:
    copy = tmp_path / "TextGenerationService"
    shutil.copytree(HEALTH_DIR, copy)
    spec = yaml.safe_load((copy / "health_test.yaml").read_text())
    wrong = next(t for t in spec["tests"] if t["healthStatus"]["status"] == "Healthy")
    wrong["healthStatus"]["status"] = "Degraded"
    (copy / "health_test.yaml").write_text(yaml.safe_dump(spec))
    code, results, stderr = run_tests(argocd_lua, copy)
    failed = [r for r in results if not r["ok"]]
    assert code == 1 and "1 of" in stderr, stderr
    assert [r["inputPath"] for r in failed] == [wrong["inputPath"]]
    assert failed[0]["actual"]["status"] == "Healthy", failed      # type: ignore[index]


def eval_script(binary: pathlib.Path, tmp_path: pathlib.Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "health.lua"
    path.write_text(script)
    return subprocess.run([str(binary), *flags, "eval", str(path)], input='{"kind": "X", "n": 3}',
                          capture_output=True, text=True, timeout=30)


def test_the_runtime_opens_what_argo_cd_opens(tmp_path: pathlib.Path, argocd_lua: pathlib.Path) -> None:
    # An argocd-cm customization gets no string library unless useOpenLibs is set: a script using it fails there.
    uses_string = 'return {status = "Healthy", message = string.lower(obj.kind)}'
    refused = eval_script(argocd_lua, tmp_path, uses_string)
    assert refused.returncode == 2 and "string" in refused.stderr, refused
    opened = eval_script(argocd_lua, tmp_path, uses_string, "-use-open-libs")
    assert json.loads(opened.stdout) == {"status": "Healthy", "message": "x"}, opened
    # table, the obj global and, through require, Argo CD's safe os (time and date; no exit). The global `os` is
    # nil: Argo CD's OpenSafeOs registers those two functions under the name "table" (util/lua/oslib_safe.go).
    basics = eval_script(argocd_lua, tmp_path, 'local safe = require("os"); return {status = (os == nil and safe.exit == nil '
                                   'and safe.time() > 0 and table.concat({"Heal", "thy"})) or "x", '
                                   'message = tostring(obj.n)}')
    assert json.loads(basics.stdout) == {"status": "Healthy", "message": "3"}, basics
    unknown = eval_script(argocd_lua, tmp_path, 'return {status = "Fine"}')
    assert json.loads(unknown.stdout) == {"status": "Unknown", "message": "Lua returned an invalid health status"}
