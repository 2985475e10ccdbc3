"""`pip install .` and a built wheel give a working `textgen-launcher` with no repository script run first.

The generated gRPC modules are git-ignored, so the build itself must make them (setup.py runs
server/proto/generate.py). These tests build from a copy of the *tracked* files only (what a clean clone or an
sdist has), offline (`--no-build-isolation`: the venv's setuptools and grpcio-tools stand in for the build
requirements pyproject.toml pins), then run the launcher from the unpacked wheel, not from this checkout.
"""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PB_MODULES = {"textgen_server/pb/shard_pb2.py", "textgen_server/pb/shard_pb2_grpc.py"}


def _tracked_copy(dest: Path) -> Path:
    """The files git tracks (a clean clone's content: no generated pb code, no venv)."""
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files are tracked")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = REPO / name
        if source.is_file():          # a file deleted in the work tree but not yet from the index is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    assert not (dest / "server/textgen_server/pb/shard_pb2.py").exists()
    return dest


def _build_wheel(source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(source)], check=True, timeout=300)
    (wheel,) = out.glob("textgen-*.whl")
    return wheel


def _launcher_entry_point(wheel: zipfile.ZipFile) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    return parser["console_scripts"]["textgen-launcher"]


def _run_from(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Runs Python with the unpacked wheel first on the path (ahead of this checkout's editable install)."""
    return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                          cwd=site, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = _tracked_copy(tmp_path_factory.mktemp("src"))
    return _build_wheel(source, tmp_path_factory.mktemp("wheel"))


def test_wheel_contains_the_generated_grpc_modules(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as wheel:
        names = set(wheel.namelist())
        assert PB_MODULES <= names, sorted(n for n in names if "/pb/" in n)
        grpc_code = wheel.read("textgen_server/pb/shard_pb2_grpc.py").decode()
        assert "from . import shard_pb2" in grpc_code      # package-relative, importable from site-packages
        assert _launcher_entry_point(wheel) == "textgen_server.launcher.main:main"


def test_launcher_from_the_wheel_starts(built_wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(built_wheel) as wheel:
        wheel.extractall(site)
    code = ("import textgen_server, textgen_server.pb.shard_pb2_grpc; "
            f"assert textgen_server.__file__.startswith({str(site)!r}), textgen_server.__file__; "
            "from textgen_server.launcher.main import main; sys.argv = ['textgen-launcher', '--help']; main()")
    result = _run_from(site, code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--num-shard" in result.stdout and "--model-id" in result.stdout


def test_sdist_carries_the_protocol_and_builds_a_complete_wheel(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "src")
    sdist_dir = tmp_path / "sdist"
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                    "print(build_meta.build_sdist(sys.argv[1]))", str(sdist_dir)],
                   cwd=source, check=True, capture_output=True, timeout=300)
    (sdist,) = sdist_dir.glob("textgen-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert (unpacked / "server/proto/shard.proto").is_file()
    with zipfile.ZipFile(_build_wheel(unpacked, tmp_path / "wheel")) as wheel:
        assert PB_MODULES <= set(wheel.namelist())
