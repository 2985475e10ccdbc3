"""Server-tier helpers: the real `textgen-launcher` process on 127.0.0.1, real HTTP, reference generations.

`launch(model_dir, *flags)` starts a launcher on a free port with its own shard socket path and log file, waits
for /health 200 and stops it (SIGTERM, then SIGKILL) at teardown. Module-scoped servers are shared by the tests
of a module whose flags are the same, to keep the suite's wall time low on a 2-core machine.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from textgen_server.testing.launcher_health import wait_until_healthy

STARTUP_TIMEOUT_S = 180.0
# The console script itself, as the container runs it.
LAUNCHER = [str(Path(sys.executable).parent / "textgen-launcher")]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LauncherProcess:
    """A running `textgen-launcher`; its combined output goes to `log_path` (printed when a test fails)."""

    def __init__(self, model_dir: Path, flags: list[str], workdir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"launcher-{self.port}.log"
        command = [*LAUNCHER, "--model-id", str(model_dir), "--hostname", "127.0.0.1", "--port", str(self.port),
                   "--shard-uds-path", str(workdir / f"shard-{self.port}"), *flags]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        wait_until_healthy(self.process, self.base_url, timeout, self.log)

    def shard_pids(self) -> list[int]:
        """Children of the launcher (the shard processes), found through /proc."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                # The fields after the ")" that closes the command name: state, ppid, ...
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    pids.append(int(entry.name))
        return pids

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


Launch = Callable[..., LauncherProcess]


def launcher_factory(workdir: Path, stack: ExitStack) -> Launch:
    """A `launch(model_dir, *flags, wait=True)` whose launchers are stopped when `stack` closes."""
    def launch(model_dir: Path, *flags: str, wait: bool = True) -> LauncherProcess:
        server = LauncherProcess(model_dir, list(flags), workdir)
        stack.callback(server.stop)
        if wait:
            server.wait_healthy()
        return server

    return launch


class ReferenceModels:
    """transformers' own float32 `generate(do_sample=False)`, the exactness oracle, one model per directory."""

    def __init__(self) -> None:
        self._models: dict[Path, Any] = {}
        self._tokenizers: dict[Path, Any] = {}

    def tokenizer(self, model_dir: Path) -> Any:
        if model_dir not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[model_dir] = AutoTokenizer.from_pretrained(model_dir)
        return self._tokenizers[model_dir]

    def greedy(self, model_dir: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        import torch

        model = self._model(model_dir)
        with torch.no_grad():
            output = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                                    dtype=torch.long), do_sample=False, max_new_tokens=max_new_tokens,
                                    min_new_tokens=0)
        return [int(t) for t in output[0, len(prompt_ids):]]

    def _model(self, model_dir: Path) -> Any:
        if model_dir not in self._models:
            import torch
            from transformers import AutoModelForCausalLM

            self._models[model_dir] = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        return self._models[model_dir]
