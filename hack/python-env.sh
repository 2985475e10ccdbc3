#!/usr/bin/env bash
# Creates (once) and prints the path of the project's Python virtual environment.
#
# The venv lives under ~/.cache/textgen/, keyed by a hash of the pins (hack/constraints.txt) and of
# pyproject.toml, so a second run on the same machine is instant and a change of pins builds a fresh one.
# The repository's .venv is a symlink to it. Generated gRPC code is rebuilt every run (cheap, and the
# .proto may have changed). Usage:  source <(hack/python-env.sh --export)   or   "$(hack/python-env.sh)/bin/pytest"
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TEXTGEN_CACHE:-$HOME/.cache/textgen}
python=${PYTHON:-python3}

command -v "$python" >/dev/null || { echo "python-env: '$python' not found; install Python >= 3.11 or set PYTHON" >&2; exit 1; }
"$python" - <<'PY' || { echo "python-env: Python >= 3.11 is required (found $("$python" --version))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

# Key: the pins plus what pyproject.toml says about installing (dependencies, extras, console scripts), so that
# editing tool settings there (pytest, mypy) does not rebuild the venv.
deps=$("$python" - "$root/pyproject.toml" <<'PY'
import json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
keys = ("dependencies", "optional-dependencies", "scripts", "requires-python")
print(json.dumps({k: project.get(k) for k in keys}, sort_keys=True))
PY
)
key=$( { cat "$root/hack/constraints.txt"; echo "$deps"; } | sha256sum | cut -c1-12)
venv="$cache/venv-$key"
mkdir -p "$cache"
# One builder at a time: concurrent runs (parallel test sessions, scripts) wait here instead of deleting the
# venv under each other's feet.
exec 9>"$cache/venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "python-env: building $venv (first run downloads torch, a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  for attempt in 1 2 3; do
    # TGI's own client, `text-generation` (server tests), without its dependencies: its huggingface-hub<1.0 cap
    # predates hub 1.x and would conflict with the server's; it needs only requests, aiohttp, pydantic and
    # huggingface_hub.utils.build_hf_headers, all installed by the first command. Pinned in constraints.txt.
    if "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -c "$root/hack/constraints.txt" -e "$root[server,operator,dev]" >&2 &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        -c "$root/hack/constraints.txt" text-generation >&2; then
      break
    fi
    [ "$attempt" = 3 ] && { echo "python-env: pip install failed three times; see the errors above" >&2; exit 1; }
    echo "python-env: pip install failed (attempt $attempt), retrying in 10 s" >&2
    sleep 10
  done
  touch "$venv/.complete"
fi
# The editable install points at this checkout; re-point it when the venv was built from another clone.
if ! "$venv/bin/python" -c "import textgen_server, sys; sys.exit(0 if textgen_server.__file__.startswith('$root/') else 1)" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -e "$root" >&2
fi
PATH="$venv/bin:$PATH" "$root/hack/gen-proto.sh" >&2
ln -sfn "$venv" "$root/.venv"
flock -u 9
if [ "${1:-}" = "--export" ]; then
  echo "export VIRTUAL_ENV='$venv' PATH='$venv/bin':\"\$PATH\""
else
  echo "$venv"
fi
