"""Generates the Python gRPC code of the router <-> shard protocol: server/proto/*.proto -> textgen_server/pb/.

One generator for both callers: hack/gen-proto.sh (a development checkout) and setup.py's build step (so that
`pip install .` and a built wheel contain the generated modules without any repository script having run).
Generated code is never committed (.gitignore). Usage: python server/proto/generate.py [OUTPUT_DIR]
"""
from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent / "textgen_server" / "pb"
# protoc writes absolute imports ("import shard_pb2 as ..."); inside a package they must be relative.
ABSOLUTE_IMPORT = re.compile(r"^import ([a-z_0-9]+_pb2) as ", re.MULTILINE)


def generate(out: Path = DEFAULT_OUT) -> list[Path]:
    """Runs protoc (from grpcio-tools) on every .proto here; returns the files written."""
    from grpc_tools import protoc   # a build/dev requirement only: the server needs grpcio, not grpcio-tools

    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p) for p in PROTO_DIR.glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"    # google/protobuf/*.proto, as `python -m` adds
    argv = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *protos]
    if protoc.main(argv) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    for grpc_module in out.glob("*_pb2_grpc.py"):
        grpc_module.write_text(ABSOLUTE_IMPORT.sub(r"from . import \1 as ", grpc_module.read_text()))
    return sorted(out.glob("*_pb2*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for written in generate(target):
        print(written)
