"""Build hook: generate the gRPC modules before the packages are collected (everything else is pyproject.toml).

Without it a wheel or `pip install .` would lack textgen_server/pb/*_pb2*.py (git-ignored, never committed) and
`textgen-launcher` would fail at import. The generator is server/proto/generate.py, shared with hack/gen-proto.sh.
"""
import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithProto(build_py):
    def run(self) -> None:
        generator = runpy.run_path(str(ROOT / "server" / "proto" / "generate.py"))
        generator["generate"]()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProto})
