"""gaudi/backend.py and gaudi/runner.py's pieces against the recording stand-ins of habana_standins.py.

A mock on purpose (no Gaudi card here; habana_standins.py says what the stand-ins do): these tests check what the
backend can get wrong on its own: which library functions it calls, with which arguments, in which order (FP8
before the graph wrapper, the wrapper around the step module, FusedSDPA for prefill rows only, hccl registered for
more than one card). The model is a real tiny transformers checkpoint on the CPU; the profiler is torch's own,
really run on the CPU. What the device would do with the calls is NOT tested here.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from habana_standins import Calls
from transformers import AutoModelForCausalLM

from textgen_server.gaudi.config import parse_gaudi_env
from textgen_server.gaudi.plan import build_plan
from textgen_server.gaudi.runner import StepProfiler, load_backend

Habana = tuple[Calls, dict[str, bool]]


def _backend() -> Any:
    return importlib.import_module("textgen_server.gaudi.backend")


def _model(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def test_graph_wrapper_goes_around_the_step_module(habana: Habana, tiny_llama_dir: Path) -> None:
    calls, _ = habana
    model = _model(tiny_llama_dir)
    step_module = _backend().prepare_model(model, build_plan(parse_gaudi_env({"LIMIT_HPU_GRAPH": "true"})))
    assert step_module is model.base_model
    assert calls == [("wrap_in_hpu_graph", ("LlamaModel", {"disable_tensor_cache": True}))]


def test_graphs_off_means_no_wrapper(habana: Habana, tiny_llama_dir: Path) -> None:
    calls, _ = habana
    model = _model(tiny_llama_dir)
    assert _backend().prepare_model(model, build_plan(parse_gaudi_env({"ENABLE_HPU_GRAPH": "false"}))) \
        is model.base_model
    assert calls == []


def test_fp8_converts_before_the_graph_wrapper(habana: Habana, tiny_llama_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls, _ = habana
    monkeypatch.chdir(tmp_path)
    Path("quant.json").write_text(json.dumps({"mode": "QUANTIZE", "dump_stats_path": "./hqt/measure"}))
    Path("hqt").mkdir()
    Path("hqt/measure_hooks_maxabs.json").write_text("{}")
    _backend().prepare_model(_model(tiny_llama_dir), build_plan(parse_gaudi_env({"QUANT_CONFIG": "quant.json"})))
    assert calls.names() == ["FP8Config.from_json_file", "convert", "mark_params_as_const", "check_params_as_const",
                             "hpu_initialize", "wrap_in_hpu_graph"]
    assert calls.of("convert") == ["fp8config:quant.json"]


def test_fp8_without_measurement_stops_before_inc(habana: Habana, tiny_llama_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls, _ = habana
    monkeypatch.chdir(tmp_path)
    Path("quant.json").write_text(json.dumps({"mode": "QUANTIZE", "dump_stats_path": "./hqt/measure"}))
    with pytest.raises(ValueError, match="no measured statistics"):
        _backend().prepare_model(_model(tiny_llama_dir), build_plan(parse_gaudi_env({"QUANT_CONFIG": "quant.json"})))
    assert "convert" not in calls.names()


@pytest.mark.parametrize("env,fused", [({"USE_FLASH_ATTENTION": "true"}, True),
                                       ({"USE_FLASH_ATTENTION": "true", "FLASH_ATTENTION_RECOMPUTE": "true"}, True),
                                       ({}, False)])
def test_attention_kernel_uses_fused_sdpa_for_prefill_only(habana: Habana, env: dict[str, str],
                                                           fused: bool) -> None:
    calls, _ = habana
    kernel = _backend().attention_kernel(build_plan(parse_gaudi_env(env)))
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, 5, 8, generator=generator) for heads in (4, 2, 2))   # GQA: 4 query, 2 KV heads
    prefill = kernel(q, k, v, None, True, 0.3)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(prefill, expected)
    mask = torch.ones(1, 1, 1, 5, dtype=torch.bool)
    torch.testing.assert_close(kernel(q[:, :, :1], k, v, mask, False, 0.3),
                               F.scaled_dot_product_attention(q[:, :, :1], k, v, attn_mask=mask, scale=0.3,
                                                              enable_gqa=True))
    recompute = env.get("FLASH_ATTENTION_RECOMPUTE") == "true"
    assert calls.of("FusedSDPA") == ([{"queries": 5, "heads": (4, 4), "softmax_mode": "None", "recompute": recompute}]
                                     if fused else [])   # the decode call (one query) never uses it


def test_select_device(habana: Habana) -> None:
    _, card = habana
    assert _backend().select_device(0) == torch.device("hpu")
    card["available"] = False
    with pytest.raises(RuntimeError, match="habana.ai/gaudi limit"):
        _backend().select_device(0)


def test_load_backend_sets_the_runtime_env_then_registers_hccl_for_two_cards(habana: Habana) -> None:
    calls, _ = habana
    environ = {"PT_HPU_ENABLE_LAZY_COLLECTIVES": "true"}
    backend, plan = load_backend(1, 2, environ)
    assert backend is _backend() and plan.distributed_backend == "hccl"
    assert environ["PT_HPU_LAZY_MODE"] == "1" and calls.names() == ["import hccl"]
    _, single = load_backend(0, 1, {})
    assert single.distributed_backend is None and calls.names() == ["import hccl"]   # not again for one card


def test_profiler_writes_one_trace_after_its_schedule(tmp_path: Path) -> None:
    env = {"PROF_STEP": "2", "PROF_WARMUPSTEP": "1", "PROF_WAITSTEP": "1", "PROF_PATH": str(tmp_path / "prof")}
    profiler = StepProfiler(build_plan(parse_gaudi_env(env)))
    for step in range(6):
        assert profiler.active is (step < 4)
        torch.ones(8).sum()
        profiler.step()
    traces = list((tmp_path / "prof").glob("*.json"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_profiler_off_records_nothing(tmp_path: Path) -> None:
    profiler = StepProfiler(build_plan(parse_gaudi_env({})))
    profiler.step()
    assert not profiler.active
