"""Each rank holds about 1/N of the weights: at N=2 a rank's resident memory grows by at most 0.55x of what one
process's grows by loading the same model (the parameters it holds: at most 0.55x of the model's bytes).

Measured with real processes (rank_memory.py): RSS after the process group is up, then after the load. The model
(about 105 MB of float32 weights) is large enough that allocator noise (a few MB) cannot decide the outcome.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server_testlib import free_port

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("rank_memory.py")
MEMORY_MODEL = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
                "num_key_value_heads": 4}


def measure(model_dir: Path, world_size: int) -> list[dict]:
    port = free_port()
    env_command = [sys.executable, str(SCRIPT), str(model_dir)]
    processes = [subprocess.Popen([*env_command, str(rank), str(world_size), str(port)], stdout=subprocess.PIPE,
                                  text=True) for rank in range(world_size)]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_a_rank_at_two_shards_holds_at_most_055_of_the_weights(tiny_model_dir) -> None:
    model_dir = tiny_model_dir("llama", **MEMORY_MODEL)
    [single] = measure(model_dir, 1)
    ranks = measure(model_dir, 2)
    full_rss = single["rss_after"] - single["rss_before"]
    full_bytes = single["param_bytes"]
    assert full_bytes > 60e6, "the memory model is too small for a meaningful measurement"
    for rank in ranks:
        rss = rank["rss_after"] - rank["rss_before"]
        report = (f"rank {rank['rank']}: +{rss / 1e6:.1f} MB resident, {rank['param_bytes'] / 1e6:.1f} MB of "
                  f"weights; one process: +{full_rss / 1e6:.1f} MB resident, {full_bytes / 1e6:.1f} MB of weights")
        print(report, f"(ratio {rss / full_rss:.2f})")  # the figure the README quotes (pytest -s)
        assert rank["param_bytes"] <= 0.55 * full_bytes, report
        assert rss <= 0.55 * full_rss, report
