"""The Gaudi backend: the ONLY module that imports habana_frameworks and neural_compressor.

Imported by the shard only when its device is `hpu` (gaudi/runner.py's `load_backend`), after
`gaudi.plan.apply_runtime_env` has set the Habana runtime variables (habana_frameworks reads PT_HPU_LAZY_MODE and
the FP8 flags when it is first imported). Without the Habana stack the import fails with ModuleNotFoundError, which
is the point: nothing else in the server may need it (server/tests/gaudi/test_import_isolation.py).

It executes a GaudiPlan (gaudi/plan.py) for our own paged, static-shape runner (gaudi/runner.py; why not
optimum-habana's models: gaudi/__init__.py), the way TGI's Gaudi backend treats its paged models
(backends/gaudi/server/text_generation_server/models/flash_causal_lm.py, layers/attention/hpu.py):
- `select_device`: the rank's card (`hpu`), or a clear error when habana_frameworks sees none;
- `init_collectives`: registers torch.distributed's `hccl` backend before the ranks form their group;
- `prepare_model`: FP8 with QUANT_CONFIG (INC's `FP8Config.from_json_file` + `convert`, then the weights marked
  constant and `htorch.core.hpu_initialize`), then `wrap_in_hpu_graph(step module, disable_tensor_cache=True)`
  with ENABLE_HPU_GRAPH; the step module is the base model whose forward each serving step calls;
- `attention_kernel`: the kernel our paged attention calls; FusedSDPA for prefill rows with USE_FLASH_ATTENTION
  (recompute mode with FLASH_ATTENTION_RECOMPUTE), torch SDPA otherwise (decode, and prefill without it);
- `mark_step`: after each forward pass (lazy mode executes the accumulated graph there).

Not run on a device here: no Gaudi machine is available to this project. tests/gaudi/ runs this module against
recording stand-ins for the two libraries (which calls, with which arguments, in which order) and serves a tiny
Llama through it with the stand-ins' `hpu` mapped onto the CPU.
"""
from __future__ import annotations

import logging

import habana_frameworks.torch as htorch  # noqa: F401 - registers the hpu device; fails without the plugin
import habana_frameworks.torch.core as htcore
import torch
import torch.nn.functional as F
from habana_frameworks.torch.hpex.kernels import FusedSDPA
from habana_frameworks.torch.hpu import wrap_in_hpu_graph

from textgen_server.gaudi.config import check_quant_config
from textgen_server.gaudi.plan import GaudiPlan
from textgen_server.models.attention import Kernel

logger = logging.getLogger(__name__)

# FusedSDPA's softmax_mode: "None" is the exact softmax (tgi-gaudi's default; "fast" trades accuracy for speed).
SOFTMAX_MODE = "None"


def select_device(rank: int) -> torch.device:
    """The rank's Gaudi card. Habana exposes one card per process (HABANA_VISIBLE_MODULES), always `hpu`."""
    if not htorch.hpu.is_available():
        raise RuntimeError(f"rank {rank}: device hpu requested (--device hpu) but habana_frameworks sees no Gaudi "
                           "card: check the pod's habana.ai/gaudi limit and the Habana device plugin, or run with "
                           "--device cpu")
    return torch.device("hpu")


def init_collectives() -> None:
    """Registers the `hccl` torch.distributed backend (the import does it); the shard then joins the group."""
    import habana_frameworks.torch.distributed.hccl  # noqa: F401


def prepare_model(model: torch.nn.Module, plan: GaudiPlan) -> torch.nn.Module:
    """FP8 (whole model, in place) then the HPU graph wrapper; returns the module each step calls."""
    if plan.quant_config is not None:
        model = quantize_fp8(model, plan.quant_config)
    step_module: torch.nn.Module = model.base_model
    if plan.wrap_in_hpu_graph:
        # In place: forward now captures one graph per input shape and accepts bypass_hpu_graphs.
        step_module = wrap_in_hpu_graph(step_module, **plan.graph_kwargs)
    return step_module


def quantize_fp8(model: torch.nn.Module, quant_config: str) -> torch.nn.Module:
    """INC FP8 from a measured QUANTIZE config; the weights become constants the graphs may fold."""
    from neural_compressor.torch.quantization import FP8Config, convert

    check_quant_config(quant_config)   # a clear message before INC's own, less helpful, failure
    model = convert(model, FP8Config.from_json_file(quant_config))
    htcore.quantization._mark_params_as_const(model)
    htcore.quantization._check_params_as_const(model)
    htcore.hpu_initialize(model)
    return model


def attention_kernel(plan: GaudiPlan) -> Kernel:
    """The attention kernel of this rank (models/attention.py's Kernel signature)."""
    def kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
               is_causal: bool, scale: float) -> torch.Tensor:
        if plan.fused_sdpa and query.shape[-2] > 1:   # prefill rows; decode stays on SDPA, as in TGI
            groups = query.shape[1] // key.shape[1]     # FusedSDPA wants as many KV heads as query heads
            key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
            return FusedSDPA.apply(query, key, value, mask, 0.0, is_causal, scale, SOFTMAX_MODE,
                                   plan.fused_sdpa_recompute)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal,
                                              scale=scale, enable_gqa=True)
    return kernel


def mark_step() -> None:
    """Lazy mode: run what the step accumulated (tgi-gaudi calls it after every forward pass)."""
    htcore.mark_step()
