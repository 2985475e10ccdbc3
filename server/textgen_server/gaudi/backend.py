"""The Gaudi backend: the ONLY module that imports habana_frameworks, optimum.habana and neural_compressor.

Imported by the shard only when its device is `hpu`, after `gaudi.plan.apply_runtime_env` has set the Habana
runtime variables (habana_frameworks reads PT_HPU_LAZY_MODE and the FP8 flags when it is first imported). Without
the Habana stack the import fails with ModuleNotFoundError, which is the point: nothing else in the server may
need it (server/tests/gaudi/test_import_isolation.py).

It executes a GaudiPlan (gaudi/plan.py) the way tgi-gaudi's server does (models/__init__.py, causal_lm.py,
habana_quantization_env.py), in this order:
1. `adapt_transformers_to_gaudi()` once, before the model class is resolved (optimum-habana swaps in its
   Gaudi-optimised model classes: static KV cache, fused RMSNorm/RoPE, FusedSDPA behind `use_flash_attention`);
2. load in the requested dtype and move to `hpu`;
3. FP8 with QUANT_CONFIG: INC's `FP8Config.from_json_file` + `convert`, then the weights marked constant and
   `htorch.core.hpu_initialize` (after the move, before the graphs);
4. `wrap_in_hpu_graph(model, disable_tensor_cache=True)` with ENABLE_HPU_GRAPH;
5. each forward pass adds the plan's kwargs (`bypass_hpu_graphs` for prefill with LIMIT_HPU_GRAPH) and ends with
   `htorch.core.mark_step()` (lazy mode executes the accumulated graph there);
6. the profiler (PROF_*) steps once per forward pass on the ranks that record.

Not run on a device here: no Gaudi machine is available to this project. tests/gaudi/test_backend_calls.py runs
this module against recording stand-ins for the three libraries (argument building and call order only).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import habana_frameworks.torch as htorch  # noqa: F401 - registers the hpu device; fails without the plugin
import habana_frameworks.torch.core  # noqa: F401 - mark_step, quantization helpers
import torch
from habana_frameworks.torch.hpu import wrap_in_hpu_graph
from optimum.habana.transformers.modeling_utils import adapt_transformers_to_gaudi
from optimum.habana.utils import HabanaProfile

from textgen_server.gaudi.config import check_quant_config
from textgen_server.gaudi.plan import GaudiPlan

logger = logging.getLogger(__name__)

_adapted = False


def adapt_transformers() -> None:
    """optimum-habana's model classes replace transformers' own; idempotent (it patches module globals)."""
    global _adapted
    if not _adapted:
        adapt_transformers_to_gaudi()
        _adapted = True


def select_device(rank: int) -> torch.device:
    """The rank's Gaudi card. Habana exposes one card per process (HABANA_VISIBLE_MODULES), always `hpu`."""
    if not htorch.hpu.is_available():
        raise RuntimeError("device hpu requested (--device hpu) but habana_frameworks sees no Gaudi card: check the "
                           "pod's habana.ai/gaudi limit and the Habana device plugin, or run with --device cpu")
    return torch.device("hpu")


def init_collectives() -> None:
    """Registers the `hccl` torch.distributed backend (the import does it); the group is joined by the shard."""
    import habana_frameworks.torch.distributed.hccl  # noqa: F401


def load_model(model_path: Path, dtype: torch.dtype, plan: GaudiPlan, device: torch.device) -> torch.nn.Module:
    """Steps 1-4: an optimum-habana model on `device` (select_device's), FP8-converted and graph-wrapped."""
    from transformers import AutoModelForCausalLM

    adapt_transformers()
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype)
    model = model.eval().to(device)
    if plan.quant_config is not None:
        model = quantize_fp8(model, plan.quant_config)
    if plan.wrap_in_hpu_graph:
        model = wrap_in_hpu_graph(model, **plan.graph_kwargs)
    return model


def quantize_fp8(model: torch.nn.Module, quant_config: str) -> torch.nn.Module:
    """INC FP8 from a measured QUANTIZE config; the weights become constants the graphs may fold."""
    from neural_compressor.torch.quantization import FP8Config, convert

    check_quant_config(quant_config)   # a clear message before INC's own, less helpful, failure
    model = convert(model, FP8Config.from_json_file(quant_config))
    htorch.core.quantization._mark_params_as_const(model)
    htorch.core.quantization._check_params_as_const(model)
    htorch.core.hpu_initialize(model)
    return model


def forward(model: torch.nn.Module, plan: GaudiPlan, is_prefill: bool, **inputs: Any) -> Any:
    """Step 5: one forward pass with the plan's kwargs, executed at mark_step."""
    outputs = model(**inputs, **plan.forward_call_kwargs(is_prefill))
    htorch.core.mark_step()
    return outputs


class StepProfiler:
    """Step 6: HabanaProfile over serving steps on the ranks PROF_RANKS names; nothing on the others."""

    def __init__(self, plan: GaudiPlan) -> None:
        self._profile: Any = None
        self._remaining = 0
        if plan.profiler is not None:
            args = plan.profiler
            self._profile = HabanaProfile(wait=args.wait, warmup=args.warmup, active=args.active,
                                          output_dir=args.output_dir, record_shapes=args.record_shapes)
            self._remaining = args.wait + args.warmup + args.active
            self._profile.start()

    def step(self) -> None:
        """After each forward pass; stops (writing the trace) once the schedule's steps are done."""
        if self._profile is None:
            return
        self._remaining -= 1
        if self._remaining > 0:
            self._profile.step()
        else:
            self._profile.stop()
            self._profile = None
