"""gaudi/backend.py against recording stand-ins for habana_frameworks, optimum.habana and neural_compressor.

A mock on purpose: the Habana stack cannot be installed or run without a Gaudi card, and none is available here.
The stand-ins only record calls, so these tests check what the backend can get wrong on its own: which library
functions it calls, with which arguments, in which order (adapt before loading, FP8 before the graph wrapper,
mark_step after every forward, the profiler's schedule). The model is a real tiny transformers checkpoint on the
CPU. What the device would do with those calls is NOT tested here.
"""
from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from textgen_server.gaudi.config import parse_gaudi_env
from textgen_server.gaudi.plan import build_plan


class Calls(list[tuple[str, Any]]):
    def names(self) -> list[str]:
        return [name for name, _ in self]


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Calls]:
    """textgen_server.gaudi.backend imported fresh over the stand-ins; returns (module, call log)."""
    calls = Calls()

    class HabanaProfile:
        def __init__(self, **kwargs: Any) -> None:
            calls.append(("HabanaProfile", kwargs))

        def start(self) -> None:
            calls.append(("profile.start", None))

        def step(self) -> None:
            calls.append(("profile.step", None))

        def stop(self) -> None:
            calls.append(("profile.stop", None))

    class FP8Config:
        @staticmethod
        def from_json_file(path: str) -> str:
            calls.append(("FP8Config.from_json_file", path))
            return f"fp8config:{path}"

    def convert(model: Any, config: Any) -> Any:
        calls.append(("convert", config))
        return model

    quantization = types.SimpleNamespace(
        _mark_params_as_const=lambda model: calls.append(("mark_params_as_const", None)),
        _check_params_as_const=lambda model: calls.append(("check_params_as_const", None)))
    core = _module("habana_frameworks.torch.core", mark_step=lambda: calls.append(("mark_step", None)),
                   hpu_initialize=lambda model: calls.append(("hpu_initialize", None)), quantization=quantization)
    available = {"value": True}
    hpu = _module("habana_frameworks.torch.hpu", is_available=lambda: available["value"],
                  wrap_in_hpu_graph=lambda model, **kw: calls.append(("wrap_in_hpu_graph", kw)) or model)
    htorch = _module("habana_frameworks.torch", core=core, hpu=hpu)
    modules = {
        "habana_frameworks": _module("habana_frameworks", torch=htorch),
        "habana_frameworks.torch": htorch, "habana_frameworks.torch.core": core, "habana_frameworks.torch.hpu": hpu,
        "optimum": _module("optimum"), "optimum.habana": _module("optimum.habana"),
        "optimum.habana.transformers": _module("optimum.habana.transformers"),
        "optimum.habana.transformers.modeling_utils": _module(
            "optimum.habana.transformers.modeling_utils",
            adapt_transformers_to_gaudi=lambda: calls.append(("adapt_transformers_to_gaudi", None))),
        "optimum.habana.utils": _module("optimum.habana.utils", HabanaProfile=HabanaProfile),
        "neural_compressor": _module("neural_compressor"),
        "neural_compressor.torch": _module("neural_compressor.torch"),
        "neural_compressor.torch.quantization": _module("neural_compressor.torch.quantization",
                                                        FP8Config=FP8Config, convert=convert),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "textgen_server.gaudi.backend", raising=False)
    module = importlib.import_module("textgen_server.gaudi.backend")
    module._available = available   # lets a test turn the card off
    yield module, calls
    sys.modules.pop("textgen_server.gaudi.backend", None)


def _log_from_pretrained(monkeypatch: pytest.MonkeyPatch, calls: Calls) -> None:
    from transformers import AutoModelForCausalLM
    original = AutoModelForCausalLM.from_pretrained

    def logged(*args: Any, **kwargs: Any) -> Any:
        calls.append(("from_pretrained", kwargs.get("dtype")))
        return original(*args, **kwargs)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", logged)


def test_bf16_single_card_load_order(backend: tuple[Any, Calls], tiny_llama_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    module, calls = backend
    _log_from_pretrained(monkeypatch, calls)
    plan = build_plan(parse_gaudi_env({"LIMIT_HPU_GRAPH": "true"}), "llama")
    model = module.load_model(tiny_llama_dir, torch.bfloat16, plan, torch.device("cpu"))
    assert calls == [("adapt_transformers_to_gaudi", None), ("from_pretrained", torch.bfloat16),
                     ("wrap_in_hpu_graph", {"disable_tensor_cache": True})]
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training
    module.load_model(tiny_llama_dir, torch.bfloat16, plan, torch.device("cpu"))
    assert calls.names().count("adapt_transformers_to_gaudi") == 1     # once per process


def test_fp8_converts_before_the_graph_wrapper(backend: tuple[Any, Calls], tiny_llama_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    module, calls = backend
    monkeypatch.chdir(tmp_path)
    Path("quant.json").write_text(json.dumps({"mode": "QUANTIZE", "dump_stats_path": "./hqt/measure"}))
    Path("hqt").mkdir()
    Path("hqt/measure_hooks_maxabs.json").write_text("{}")
    plan = build_plan(parse_gaudi_env({"QUANT_CONFIG": "quant.json"}), "llama")
    module.load_model(tiny_llama_dir, torch.float32, plan, torch.device("cpu"))
    assert calls.names() == ["adapt_transformers_to_gaudi", "FP8Config.from_json_file", "convert",
                             "mark_params_as_const", "check_params_as_const", "hpu_initialize", "wrap_in_hpu_graph"]
    assert ("convert", "fp8config:quant.json") in calls


def test_fp8_without_measurement_stops_before_inc(backend: tuple[Any, Calls], tiny_llama_dir: Path,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, calls = backend
    monkeypatch.chdir(tmp_path)
    Path("quant.json").write_text(json.dumps({"mode": "QUANTIZE", "dump_stats_path": "./hqt/measure"}))
    plan = build_plan(parse_gaudi_env({"QUANT_CONFIG": "quant.json"}), "llama")
    with pytest.raises(ValueError, match="no measured statistics"):
        module.load_model(tiny_llama_dir, torch.float32, plan, torch.device("cpu"))
    assert "convert" not in calls.names()


def test_graphs_off_means_no_wrapper(backend: tuple[Any, Calls], tiny_llama_dir: Path) -> None:
    module, calls = backend
    plan = build_plan(parse_gaudi_env({"ENABLE_HPU_GRAPH": "false"}), "llama")
    module.load_model(tiny_llama_dir, torch.float32, plan, torch.device("cpu"))
    assert "wrap_in_hpu_graph" not in calls.names()


@pytest.mark.parametrize("is_prefill,bypass", [(True, True), (False, False)])
def test_forward_adds_the_plan_kwargs_then_marks_the_step(backend: tuple[Any, Calls], is_prefill: bool,
                                                          bypass: bool) -> None:
    module, calls = backend
    plan = build_plan(parse_gaudi_env({"LIMIT_HPU_GRAPH": "true", "USE_FLASH_ATTENTION": "true"}), "llama")
    seen: dict[str, Any] = {}

    def model(**kwargs: Any) -> str:
        seen.update(kwargs)
        calls.append(("model", None))
        return "logits"
    assert module.forward(model, plan, is_prefill, input_ids="ids") == "logits"
    assert seen == {"input_ids": "ids", **plan.forward_kwargs, "bypass_hpu_graphs": bypass}
    assert seen["use_flash_attention"] is True and calls.names() == ["model", "mark_step"]


def test_profiler_schedule(backend: tuple[Any, Calls]) -> None:
    module, calls = backend
    env = {"PROF_STEP": "2", "PROF_WARMUPSTEP": "1", "PROF_WAITSTEP": "1", "PROF_PATH": "/tmp/p"}
    profiler = module.StepProfiler(build_plan(parse_gaudi_env(env), "llama"))
    for _ in range(6):
        profiler.step()
    assert calls[0] == ("HabanaProfile", {"wait": 1, "warmup": 1, "active": 2, "output_dir": "/tmp/p",
                                          "record_shapes": False})
    assert calls.names()[1:] == ["profile.start", "profile.step", "profile.step", "profile.step", "profile.stop"]


def test_profiler_off_records_nothing(backend: tuple[Any, Calls]) -> None:
    module, calls = backend
    profiler = module.StepProfiler(build_plan(parse_gaudi_env({}), "llama"))
    profiler.step()
    assert calls == []


def test_select_device(backend: tuple[Any, Calls]) -> None:
    module, _ = backend
    assert module.select_device(0) == torch.device("hpu")
    module._available["value"] = False
    with pytest.raises(RuntimeError, match="habana.ai/gaudi limit"):
        module.select_device(0)
