"""Recording stand-ins for the Habana stack (habana_frameworks, neural_compressor), for tests/gaudi.

A mock on purpose: the Habana stack cannot be installed or run without a Gaudi card, and none is available to this
project. The stand-ins record every call the backend makes (name and the arguments that matter) and compute what
the real call would on the CPU where that is defined (FusedSDPA = torch SDPA with the same arguments; the graph
wrapper runs the module eagerly; mark_step does nothing), so a real model served through the backend must give the
CPU's tokens. What the device itself would do with those calls (graph capture, lazy execution, FP8) is NOT tested.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

HCCL = "habana_frameworks.torch.distributed.hccl"


class Calls(list[tuple[str, Any]]):
    def names(self) -> list[str]:
        return [name for name, _ in self]

    def of(self, name: str) -> list[Any]:
        return [value for call, value in self if call == name]


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


class _HcclFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import habana_frameworks.torch.distributed.hccl` (which registers the hccl backend) is recorded."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self) if name == HCCL else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        self.calls.append(("import hccl", None))


def _wrap_in_hpu_graph(calls: Calls) -> Any:
    def wrap(module: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        calls.append(("wrap_in_hpu_graph", (type(module).__name__, kwargs)))
        eager = module.forward

        def forward(*args: Any, bypass_hpu_graphs: bool = False, **inputs: Any) -> Any:
            step = inputs.get("textgen_step")
            is_prefill = bool(step.metadata.chunks) if step is not None else None
            calls.append(("graph_forward", (bypass_hpu_graphs, is_prefill)))
            return eager(*args, **inputs)
        module.forward = forward  # type: ignore[method-assign]  # in place, as the real wrapper
        return module
    return wrap


def _fused_sdpa(calls: Calls) -> type:
    class FusedSDPA:
        @staticmethod
        def apply(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                  dropout: float, is_causal: bool, scale: float, softmax_mode: str, recompute: bool) -> torch.Tensor:
            calls.append(("FusedSDPA", {"queries": query.shape[-2], "heads": (query.shape[1], key.shape[1]),
                                        "softmax_mode": softmax_mode, "recompute": recompute}))
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout,
                                                  is_causal=is_causal, scale=scale)
    return FusedSDPA


def _neural_compressor(calls: Calls) -> dict[str, types.ModuleType]:
    class FP8Config:
        @staticmethod
        def from_json_file(path: str) -> str:
            calls.append(("FP8Config.from_json_file", path))
            return f"fp8config:{path}"

    def convert(model: Any, config: Any) -> Any:
        calls.append(("convert", config))
        return model
    return {"neural_compressor": _module("neural_compressor"),
            "neural_compressor.torch": _module("neural_compressor.torch"),
            "neural_compressor.torch.quantization": _module("neural_compressor.torch.quantization",
                                                            FP8Config=FP8Config, convert=convert)}


@pytest.fixture
def habana(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Calls, dict[str, bool]]]:
    """The stand-ins in sys.modules (and textgen_server.gaudi.backend forgotten, so it imports over them);
    yields (call log, {"available": ...} to turn the card off)."""
    calls, card = Calls(), {"available": True}
    quantization = types.SimpleNamespace(
        _mark_params_as_const=lambda model: calls.append(("mark_params_as_const", None)),
        _check_params_as_const=lambda model: calls.append(("check_params_as_const", None)))
    core = _module("habana_frameworks.torch.core", mark_step=lambda: calls.append(("mark_step", None)),
                   hpu_initialize=lambda model: calls.append(("hpu_initialize", None)), quantization=quantization)
    hpu = _module("habana_frameworks.torch.hpu", is_available=lambda: card["available"],
                  wrap_in_hpu_graph=_wrap_in_hpu_graph(calls))
    kernels = _module("habana_frameworks.torch.hpex.kernels", FusedSDPA=_fused_sdpa(calls))
    htorch = _module("habana_frameworks.torch", core=core, hpu=hpu)
    modules = {"habana_frameworks": _module("habana_frameworks", torch=htorch), "habana_frameworks.torch": htorch,
               "habana_frameworks.torch.core": core, "habana_frameworks.torch.hpu": hpu,
               "habana_frameworks.torch.hpex": _module("habana_frameworks.torch.hpex", kernels=kernels),
               "habana_frameworks.torch.hpex.kernels": kernels,
               "habana_frameworks.torch.distributed": _module("habana_frameworks.torch.distributed", __path__=[]),
               **_neural_compressor(calls)}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, HCCL, raising=False)
    finder = _HcclFinder(calls)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "textgen_server.gaudi.backend", raising=False)
    # load_backend sets Habana's runtime variables (PT_HPU_LAZY_MODE, ...) in os.environ, as it must in a shard:
    # left there, every later launcher test would start its server with a Gaudi variable set (and be refused).
    environ = dict(os.environ)
    yield calls, card
    sys.modules.pop("textgen_server.gaudi.backend", None)
    sys.modules.pop(HCCL, None)
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    os.environ.update(environ)
