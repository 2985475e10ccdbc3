"""Start a textgen-launcher for a benchmark and stop it after (hack/bench-server.py, bench-tp.py,
bench-speculation.py and the speculation server tests)."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from textgen_server.testing.launcher_health import wait_until_healthy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def launcher_process(model_dir: Path, extra: list[str], workdir: Path, name: str = "launcher",
                     env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A healthy launcher serving `model_dir` on a free local port: yields its base URL and process (for
    measuring its shards); SIGTERM on exit. `env`: the process's whole environment (default: this one's)."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    command = [str(Path(sys.executable).parent / "textgen-launcher"), "--model-id", str(model_dir), "--hostname",
               "127.0.0.1", "--port", str(port), "--shard-uds-path", str(workdir / f"{name}-shard"),
               "--max-concurrent-requests", "1024", *extra]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base_url, 900, log_path.read_text, poll_seconds=0.5)
        yield base_url, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
        print(f"(launcher log: {log_path})", file=sys.stderr)


@contextmanager
def running_launcher(model_dir: Path, extra: list[str], workdir: Path, name: str = "launcher") -> Iterator[str]:
    """A healthy launcher serving `model_dir` on a free local port (yields its base URL); SIGTERM on exit."""
    with launcher_process(model_dir, extra, workdir, name) as (base_url, _process):
        yield base_url
