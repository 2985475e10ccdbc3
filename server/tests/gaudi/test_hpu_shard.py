"""`--device hpu` through the shard's real code path, over the Habana stand-ins of habana_standins.py (a mock: no Gaudi
card exists here), with the stand-ins' `hpu` mapped onto the CPU: the runner gets the CPU device where
backend.select_device would give `hpu` (select_device itself is tested in test_backend_calls.py).

The shard's own functions build the runner from its flags (shard/__main__.py: parse_args, build_runner;
gaudi/runner.py: load_backend) and the real router engine serves test_static_shapes_cpu.py's varied workload.
It must give the same greedy tokens as `--device cpu` with the same static shapes (a step mixing prompts and decodes
runs as two passes on hpu, each a warmed shape), and the recorded calls must show
mark_step after every forward pass, the graph wrapper on the step module with prefill bypassing it under
LIMIT_HPU_GRAPH, and FusedSDPA inside prefill forward passes only with USE_FLASH_ATTENTION. On two cards, serve()
registers hccl before the ranks' group forms, on the backend's device.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from habana_standins import Calls
from test_static_shapes_cpu import SPEC, _jobs, serve

from textgen_server.gaudi.runner import HpuRunner, load_backend
from textgen_server.shard.__main__ import build_runner, parse_args
from textgen_server.shard.static_runner import StaticShapeRunner

FLAGS = ["--uds-path", "/tmp/unused", "--dtype", "float32", "--static-shapes", "4,2,32"]


def _runner(model: Path, device: str, gaudi: tuple[Any, Any] | None = None, *extra: str) -> Any:
    config = parse_args(["--model-path", str(model), "--device", device, *FLAGS, *extra])
    return build_runner(config, torch.device("cpu"), gaudi)


def _forwards(calls: Calls) -> list[list[tuple[str, Any]]]:
    """The call log cut at each mark_step: one group per forward pass, mark_step last."""
    groups: list[list[tuple[str, Any]]] = [[]]
    for call in calls:
        groups[-1].append(call)
        if call[0] == "mark_step":
            groups.append([])
    assert groups[-1] == [], f"calls after the last mark_step: {groups[-1]}"
    return groups[:-1]


@pytest.mark.slow
def test_hpu_shard_serves_the_cpu_tokens_with_graphs_fused_sdpa_and_a_mark_step_per_forward(
        habana: tuple[Calls, dict[str, bool]], tiny_llama_dir: Path) -> None:
    calls, _ = habana
    gaudi = load_backend(0, 1, {"LIMIT_HPU_GRAPH": "true", "USE_FLASH_ATTENTION": "true"})
    hpu = _runner(tiny_llama_dir, "hpu", gaudi)
    assert isinstance(hpu, HpuRunner)
    assert calls.of("wrap_in_hpu_graph") == [("LlamaModel", {"disable_tensor_cache": True})]
    calls.clear()
    hpu_warmup = hpu.warmup(SPEC)
    hpu_outputs, _ = serve(hpu, hpu_warmup, hpu.config, _jobs())

    cpu = _runner(tiny_llama_dir, "cpu")
    assert type(cpu) is StaticShapeRunner
    cpu_outputs, _ = serve(cpu, cpu.warmup(SPEC), cpu.config, _jobs())
    assert hpu_outputs == cpu_outputs and sum(map(len, hpu_outputs)) > 100
    assert hpu.unwarmed_shapes() == []
    # Steps mixing prompts and decodes (the CPU runs them as one pass) ran as two passes, each a warmed shape.
    mixed = sum(1 for prefill, decode in cpu.shapes_seen if prefill is not None and decode is not None)
    assert mixed > 0 and len(hpu.shapes_seen) == len(cpu.shapes_seen) + mixed
    assert all(prefill is None or decode is None for prefill, decode in hpu.shapes_seen)

    forwards = _forwards(calls)
    # warmup: the base runner's largest prefill, then every enumerated shape; serving: one per scheduled step
    assert len(forwards) == 1 + len(hpu.warmed_shapes) + len(hpu.shapes_seen)
    num_layers = hpu.loaded.config.num_hidden_layers
    for group in forwards:
        (bypass, is_prefill), = [value for name, value in group if name == "graph_forward"]
        assert bypass is is_prefill                                     # LIMIT_HPU_GRAPH: prefill outside graphs
        fused = [value for name, value in group if name == "FusedSDPA"]
        assert all(call["queries"] > 1 and call["recompute"] is False for call in fused)
        assert (len(fused) >= num_layers) if is_prefill else fused == []   # every layer's prefill attention
    assert any(not group[0][1][1] for group in forwards)                # decode passes were served too


def test_hpu_shard_without_graphs_still_marks_every_step(habana: tuple[Calls, dict[str, bool]],
                                                        tiny_llama_dir: Path) -> None:
    calls, _ = habana
    gaudi = load_backend(0, 1, {"ENABLE_HPU_GRAPH": "false", "WARMUP_ENABLED": "false"})
    hpu = _runner(tiny_llama_dir, "hpu", gaudi, "--no-shape-warmup")
    warmup = hpu.warmup(SPEC)
    jobs = _jobs()[:3]
    outputs, _ = serve(hpu, warmup, hpu.config, jobs)
    assert [len(output) for output in outputs] == [new for _, new, _ in jobs]
    forwards = _forwards(calls)
    assert len(forwards) == 1 + len(hpu.shapes_seen) and not hpu.warmed_shapes
    assert {name for name, _ in calls} == {"mark_step"}                 # no wrapper, no FusedSDPA


def test_the_shard_refuses_hpu_without_static_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--model-path", "/m", "--uds-path", "/tmp/s", "--device", "hpu"])
    assert "--device hpu needs --static-shapes" in capsys.readouterr().err


class _Stop(Exception):
    pass


def test_serve_on_two_cards_registers_hccl_before_the_group_forms_on_the_hpu_device(
        habana: tuple[Calls, dict[str, bool]], monkeypatch: pytest.MonkeyPatch) -> None:
    """shard/__main__.py's serve() up to the rendezvous (stopped there: no second rank, no real hccl here)."""
    from textgen_server.devices import DISTRIBUTED_BACKENDS
    from textgen_server.shard import distributed
    from textgen_server.shard.__main__ import serve
    calls, _ = habana
    monkeypatch.setenv("PT_HPU_ENABLE_LAZY_COLLECTIVES", "true")
    monkeypatch.delenv("PT_HPU_LAZY_MODE", raising=False)       # restored after the test; serve() sets it

    def init_process_group(device: str, rank: int, world_size: int, *args: Any, **kwargs: Any) -> None:
        calls.append(("init_process_group", (DISTRIBUTED_BACKENDS[device], rank, world_size, kwargs["probe_device"])))
        raise _Stop
    monkeypatch.setattr(distributed, "init_process_group", init_process_group)
    config = parse_args(["--model-path", "/m", "--device", "hpu", "--rank", "1", "--world-size", "2", *FLAGS])
    with pytest.raises(_Stop):
        serve(config)
    assert calls == [("import hccl", None), ("init_process_group", ("hccl", 1, 2, torch.device("hpu")))]
    assert os.environ["PT_HPU_LAZY_MODE"] == "1"                   # set before the backend was imported
