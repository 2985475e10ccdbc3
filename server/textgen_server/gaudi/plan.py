"""What the Gaudi backend will do, decided from the config alone (torch-free, so it is tested on any machine).

`build_plan` turns a GaudiConfig and the rank into plain data: the Habana runtime variables to set before
`habana_frameworks` is first imported, whether and how to wrap the step model in HPU graphs (and whether prefill
bypasses them), whether prefill attention uses Habana's FusedSDPA (and in which mode), the FP8 config, the
profiler's arguments and the collective backend. `gaudi/backend.py` and `gaudi/runner.py` only execute it.

The model is ours, not optimum-habana's (gaudi/__init__.py says why), so no optimum-habana forward kwargs
(trim_logits, attn_softmax_bf16, lazy_mode, ...) appear here: the only per-call kwarg is the graph wrapper's own
`bypass_hpu_graphs`.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from textgen_server.gaudi.config import GaudiConfig

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
    """The profiler schedule and output of this rank (gaudi/runner.py's StepProfiler: torch.profiler)."""

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
    fused_sdpa: bool                             # USE_FLASH_ATTENTION: FusedSDPA for prefill attention
    fused_sdpa_recompute: bool                   # FLASH_ATTENTION_RECOMPUTE: FusedSDPA's recompute mode
    quant_config: str | None                     # INC FP8 config (checked by gaudi.config.check_quant_config)
    profiler: ProfilerArgs | None                # None: this rank records nothing
    distributed_backend: str | None              # "hccl" with more than one card
    notes: tuple[str, ...] = field(default=())   # what the shard logs at start (one line each)

    def forward_call_kwargs(self, is_prefill: bool) -> dict[str, Any]:
        """The kwargs one forward pass adds to its inputs: graphs are bypassed for prefill with LIMIT_HPU_GRAPH.
        Without the graph wrapper there are none (the model itself would not know `bypass_hpu_graphs`)."""
        if not self.wrap_in_hpu_graph:
            return {}
        return {"bypass_hpu_graphs": is_prefill and self.bypass_graphs_for_prefill}


def build_plan(config: GaudiConfig, rank: int = 0, world_size: int = 1) -> GaudiPlan:
    """The plan for one rank (the config was checked by parse_gaudi_env; nothing here depends on the model, as
    our paged attention and FusedSDPA serve every architecture the server loads)."""
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
        fused_sdpa=config.use_flash_attention,
        fused_sdpa_recompute=config.flash_attention_recompute,
        quant_config=config.quant_config,
        profiler=profiler,
        distributed_backend="hccl" if world_size > 1 else None,
        notes=_notes(config, rank, profiler),
    )


def _notes(config: GaudiConfig, rank: int, profiler: ProfilerArgs | None) -> tuple[str, ...]:
    graphs = ("off" if not config.enable_hpu_graph else
              "decode only (LIMIT_HPU_GRAPH)" if config.limit_hpu_graph else "prefill and decode")
    notes = [f"rank {rank}: HPU graphs {graphs}; fused SDPA for prefill {'on' if config.use_flash_attention else 'off'}"
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
