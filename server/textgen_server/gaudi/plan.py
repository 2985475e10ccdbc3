"""What the Gaudi backend will do, decided from the config alone (torch-free, so it is tested on any machine).

`build_plan` turns a GaudiConfig, the model type and the rank into plain data: the Habana runtime variables to set
before `habana_frameworks` is first imported, whether and how to wrap the model in HPU graphs, the extra forward
kwargs of optimum-habana's models (tgi-gaudi's causal_lm.py), the FP8 config, the profiler's arguments and the
collective backend. `gaudi/backend.py` only executes it. Refusals (a setting the model cannot honour) are raised
here, before any weight is loaded.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from textgen_server.gaudi.config import GaudiConfig, GaudiConfigError

# optimum-habana model types whose forward takes the Gaudi attention kwargs (tgi-gaudi passes them to these only).
FUSED_ATTENTION_MODEL_TYPES = frozenset({"llama", "mistral", "starcoder2", "qwen2", "falcon"})
# Of those, the ones whose forward takes `attn_softmax_bf16` (falcon's does not) and `lazy_mode` (llama's only).
SOFTMAX_BF16_MODEL_TYPES = FUSED_ATTENTION_MODEL_TYPES - {"falcon"}
LAZY_MODE_KWARG_MODEL_TYPES = frozenset({"llama"})

# Set with setdefault (a user's own value wins) before habana_frameworks loads: Habana reads them at import time.
FP8_RUNTIME_DEFAULTS: dict[str, str] = {   # tgi-gaudi's habana_quantization_env.py for INC FP8
    "ENABLE_EXPERIMENTAL_FLAGS": "true",
    "USE_DEFAULT_QUANT_PARAM": "true",
    "UPDATE_GRAPH_OUTPUT_MME": "false",
    "ENABLE_CALC_DYNAMIC_RANGE": "false",
    "UPDATE_MME_OUTPUT_PRECISION_FILTER": "v_proj,matmul_av",
    "EXPERIMENTAL_WEIGHT_SHARING": "FALSE",
}


@dataclass(frozen=True)
class ProfilerArgs:
    """optimum.habana.utils.HabanaProfile's arguments for this rank."""

    wait: int
    warmup: int
    active: int
    output_dir: str
    record_shapes: bool


@dataclass(frozen=True)
class GaudiPlan:
    """Everything gaudi/backend.py does for one rank, as data."""

    runtime_env: dict[str, str]                  # setdefault before importing habana_frameworks
    wrap_in_hpu_graph: bool                      # ENABLE_HPU_GRAPH (lazy mode)
    graph_kwargs: dict[str, Any]                 # wrap_in_hpu_graph(model, **graph_kwargs)
    bypass_graphs_for_prefill: bool              # LIMIT_HPU_GRAPH: prefill runs outside the graphs
    forward_kwargs: dict[str, Any]               # optimum-habana model forward kwargs
    quant_config: str | None                     # INC FP8 config (checked by gaudi.config.check_quant_config)
    profiler: ProfilerArgs | None                # None: this rank records nothing
    distributed_backend: str | None              # "hccl" with more than one card
    warmup: bool                                 # WARMUP_ENABLED
    notes: tuple[str, ...] = field(default=())   # what the shard logs at start (one line each)

    def forward_call_kwargs(self, is_prefill: bool) -> dict[str, Any]:
        """The kwargs one forward pass adds to its inputs: graphs are bypassed for prefill with LIMIT_HPU_GRAPH."""
        kwargs = dict(self.forward_kwargs)
        if self.wrap_in_hpu_graph:
            kwargs["bypass_hpu_graphs"] = is_prefill and self.bypass_graphs_for_prefill
        return kwargs


def build_plan(config: GaudiConfig, model_type: str, rank: int = 0, world_size: int = 1) -> GaudiPlan:
    """The plan for one rank; raises GaudiConfigError when the model cannot honour a setting."""
    _check_model(config, model_type)
    env = {"PT_HPU_LAZY_MODE": "1"}
    if world_size > 1:
        env["PT_HPU_ENABLE_LAZY_COLLECTIVES"] = "true" if config.lazy_collectives else "false"
    if config.quant_config is not None:
        env.update(FP8_RUNTIME_DEFAULTS)
    profiler = None
    if config.profiler.profiles_rank(rank):
        p = config.profiler
        profiler = ProfilerArgs(p.wait_steps, p.warmup_steps, p.active_steps, p.path, p.record_shapes)
    return GaudiPlan(
        runtime_env=env,
        wrap_in_hpu_graph=config.enable_hpu_graph,
        # Our step owns its KV cache and inputs: the graph must not keep its own copies of input tensors.
        graph_kwargs={"disable_tensor_cache": True},
        bypass_graphs_for_prefill=config.limit_hpu_graph,
        forward_kwargs=_forward_kwargs(config, model_type),
        quant_config=config.quant_config,
        profiler=profiler,
        distributed_backend="hccl" if world_size > 1 else None,
        warmup=config.warmup_enabled,
        notes=_notes(config, rank, profiler),
    )


def _check_model(config: GaudiConfig, model_type: str) -> None:
    if config.use_flash_attention and model_type not in FUSED_ATTENTION_MODEL_TYPES:
        raise GaudiConfigError(
            f"USE_FLASH_ATTENTION=true: the fused attention (FusedSDPA) is available for model types "
            f"{', '.join(sorted(FUSED_ATTENTION_MODEL_TYPES))} only, not {model_type!r}; unset USE_FLASH_ATTENTION")


def _forward_kwargs(config: GaudiConfig, model_type: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"use_cache": True, "return_dict": True}
    if model_type in FUSED_ATTENTION_MODEL_TYPES:
        kwargs["trim_logits"] = True   # logits of the last position only
        if model_type in SOFTMAX_BF16_MODEL_TYPES:
            kwargs["attn_softmax_bf16"] = True
        if config.use_flash_attention:
            kwargs["use_flash_attention"] = True
            kwargs["flash_attention_recompute"] = config.flash_attention_recompute
    if model_type in LAZY_MODE_KWARG_MODEL_TYPES:
        kwargs["lazy_mode"] = config.lazy_mode
    return kwargs


def _notes(config: GaudiConfig, rank: int, profiler: ProfilerArgs | None) -> tuple[str, ...]:
    graphs = ("off" if not config.enable_hpu_graph else
              "decode only (LIMIT_HPU_GRAPH)" if config.limit_hpu_graph else "prefill and decode")
    notes = [f"rank {rank}: HPU graphs {graphs}; fused SDPA {'on' if config.use_flash_attention else 'off'}"
             f"{' (recompute)' if config.flash_attention_recompute else ''}; FP8 "
             f"{config.quant_config or 'off'}; warmup {'on' if config.warmup_enabled else 'off'}"]
    if profiler is not None:
        notes.append(f"rank {rank}: profiling {profiler.active} steps after {profiler.wait} + {profiler.warmup} "
                     f"into {profiler.output_dir}")
    return tuple(notes)


def apply_runtime_env(plan: GaudiPlan, environ: MutableMapping[str, str]) -> dict[str, str]:
    """Sets the plan's runtime variables that are not set yet (the user's own values win); returns what it set.
    Must run before the first `import habana_frameworks`, which reads them."""
    added = {name: value for name, value in plan.runtime_env.items() if name not in environ}
    environ.update(added)
    return added
