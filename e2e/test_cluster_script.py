"""hack/cluster itself: `up` is idempotent and fast on a running cluster, `status` tells, clashes are explained."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from e2e.harness import HACK_CLUSTER, Cluster


def hack_cluster(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HACK_CLUSTER), *args], capture_output=True, text=True, env=env, timeout=120)


def test_up_on_a_running_cluster_is_a_fast_no_op(cluster: Cluster) -> None:
    pids_before = {p.name: p.read_text() for p in (cluster.state_dir / "pids").iterdir()}
    start = time.monotonic()
    proc = hack_cluster("up")
    elapsed = time.monotonic() - start

    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == cluster.kubeconfig
    assert "already up" in proc.stderr
    assert elapsed < 3, elapsed
    assert {p.name: p.read_text() for p in (cluster.state_dir / "pids").iterdir()} == pids_before


def test_status_lists_every_component_running(cluster: Cluster) -> None:
    proc = hack_cluster("status")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        assert f"{component}: running (pid " in proc.stdout, proc.stdout
    assert "kube-apiserver: ready at https://127.0.0.1:" in proc.stdout


def test_second_cluster_on_a_taken_port_is_refused_with_the_variable_to_set(cluster: Cluster, tmp_path: Path) -> None:
    api_port = cluster.kubeconfig.read_text().split("server: https://127.0.0.1:")[1].split()[0]
    env = {**os.environ, "TEXTGEN_CLUSTER_DIR": str(tmp_path / "other"), "TEXTGEN_CLUSTER_API_PORT": api_port,
           "TEXTGEN_CLUSTER_ETCD_PORT": "36999"}

    proc = hack_cluster("up", env=env)

    assert proc.returncode != 0
    assert f"port 127.0.0.1:{api_port} is already in use" in proc.stderr, proc.stderr
    assert "TEXTGEN_CLUSTER_API_PORT" in proc.stderr
    assert not (tmp_path / "other" / "pids").exists()  # nothing was started
