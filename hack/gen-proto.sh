#!/usr/bin/env bash
# Generates the Python gRPC code for the router <-> shard protocol from server/proto/*.proto into
# server/textgen_server/pb/ (git-ignored: never edit or commit generated code). Needs grpcio-tools,
# which the dev extra installs; hack/python-env.sh runs this on every call. The generator itself is
# server/proto/generate.py, which setup.py also runs when a wheel is built.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python "$root/server/proto/generate.py" > /dev/null
