#!/usr/bin/env bash
# Generates the Python gRPC code for the router <-> shard protocol from server/proto/*.proto into
# server/textgen_server/pb/ (git-ignored: never edit or commit generated code). Needs grpcio-tools,
# which the dev extra installs; hack/python-env.sh runs this on every call.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$root/server/textgen_server/pb"
mkdir -p "$out"
python -m grpc_tools.protoc -I"$root/server/proto" --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" "$root"/server/proto/*.proto
# protoc writes absolute imports ("import shard_pb2"); make them package-relative.
sed -i -E 's/^import ([a-z_0-9]+_pb2) as /from . import \1 as /' "$out"/*_pb2_grpc.py
