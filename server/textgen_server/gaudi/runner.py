"""The `hpu` shard's runner: the static-shape paged runner with the Gaudi backend's calls around each step.

`load_backend` reads TGI on Gaudi's variables into a GaudiPlan, sets the Habana runtime variables, and only then
imports gaudi/backend.py (the one module that imports habana_frameworks). `HpuRunner` is shard/static_runner.py's
StaticShapeRunner (every forward pass padded to a warmed bucket shape, which HPU graphs need) with:
- the attention kernel from the backend (FusedSDPA for prefill with USE_FLASH_ATTENTION);
- the model prepared by the backend (FP8 with QUANT_CONFIG, then wrapped in HPU graphs with ENABLE_HPU_GRAPH);
- a step mixing prompt and decode items run as two passes (each a warmed shape; HPU graphs key on the whole pass);
- each forward pass called with the plan's kwargs (`bypass_hpu_graphs` for prefill with LIMIT_HPU_GRAPH), then
  `mark_step`, then one profiler step (PROF_*).

This module imports no Habana library itself (the backend module is handed in), so it is imported, and tested,
on any machine.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any

import torch

from textgen_server.gaudi.config import parse_gaudi_env
from textgen_server.gaudi.plan import GaudiPlan, apply_runtime_env, build_plan
from textgen_server.models.attention import Kernel, StepContext
from textgen_server.models.decode_rows import DecodeRows, StepRows
from textgen_server.models.attention_metadata import AttentionMetadata
from textgen_server.models.kv_cache import PagedKVCache
from textgen_server.protocol import StepItem
from textgen_server.shard.static_runner import StaticShapeRunner

logger = logging.getLogger(__name__)
BACKEND_MODULE = "textgen_server.gaudi.backend"


def load_backend(rank: int, world_size: int,
                 environ: MutableMapping[str, str] = os.environ) -> tuple[ModuleType, GaudiPlan]:
    """The plan for this rank and the imported backend; raises GaudiConfigError on a bad variable (the launcher
    checked them already) and RuntimeError without the Habana stack."""
    plan = build_plan(parse_gaudi_env(environ, world_size), rank, world_size)
    added = apply_runtime_env(plan, environ)   # before the import: Habana reads them when it loads
    if added:
        logger.info("rank %d: Habana runtime variables set: %s", rank,
                    " ".join(f"{name}={value}" for name, value in sorted(added.items())))
    logger.info("rank %d: device hpu: the static-shape runner (HPU graphs need bucketed shapes; the launcher "
                "always passes --static-shapes on hpu)", rank)
    for note in plan.notes:
        logger.info("%s", note)
    try:
        backend = importlib.import_module(BACKEND_MODULE)
    except ModuleNotFoundError as error:
        raise RuntimeError(f"rank {rank}: device hpu requested (--device hpu) but the Habana stack is not installed "
                           f"({error}): run the textgen-server-gaudi image (images/server-gaudi) on a Gaudi node, "
                           "or pass --device cpu") from error
    if plan.distributed_backend is not None:
        backend.init_collectives()
    return backend, plan


class StepProfiler:
    """torch.profiler over serving steps (CPU and HPU activity) on the ranks PROF_RANKS names; nothing elsewhere.

    torch's own profiler, as optimum-habana's HabanaProfile wraps it (the schedule wait/warmup/active, one
    TensorBoard trace into PROF_PATH), so the image needs no optimum-habana for it."""

    def __init__(self, plan: GaudiPlan) -> None:
        self._profile: torch.profiler.profile | None = None
        self._remaining = 0
        args = plan.profiler
        if args is None:
            return
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.HPU]
        self._profile = torch.profiler.profile(
            activities=activities, record_shapes=args.record_shapes,
            schedule=torch.profiler.schedule(wait=args.wait, warmup=args.warmup, active=args.active, repeat=1),
            on_trace_ready=torch.profiler.tensorboard_trace_handler(args.output_dir))
        self._remaining = args.wait + args.warmup + args.active
        self._profile.start()

    @property
    def active(self) -> bool:
        return self._profile is not None

    def step(self) -> None:
        """After each forward pass; stops once the schedule is done (the trace was written at its last step)."""
        if self._profile is None:
            return
        self._profile.step()
        self._remaining -= 1
        if self._remaining <= 0:
            self._profile.stop()
            self._profile = None


class HpuRunner(StaticShapeRunner):
    """StaticShapeRunner on a Gaudi card, executing a GaudiPlan through the backend module."""

    def __init__(self, *args: Any, backend: ModuleType, plan: GaudiPlan, **kwargs: Any) -> None:
        self.backend, self.plan = backend, plan   # before the base class: _select_kernel reads them
        super().__init__(*args, **kwargs)
        self.step_module = backend.prepare_model(self.loaded.model, plan)
        self.profiler = StepProfiler(plan)

    def _select_kernel(self) -> Kernel:
        kernel: Kernel = self.backend.attention_kernel(self.plan)
        return kernel

    def _forward(self, items: list[StepItem], metadata: AttentionMetadata, cache: PagedKVCache) -> torch.Tensor:
        """A step with both prompt and decode items runs as two passes, prompts first: an HPU graph is keyed by the
        whole pass's input shapes, so one mixed pass would be a (prefill, decode) pair warmup never ran (it warms
        each kind alone, as tgi-gaudi, which never mixes them). The requests are disjoint, so the result is the
        same; the rows come back in the items' order."""
        prefill = [item for item in items if len(item.token_ids) > 1]
        decode = [item for item in items if len(item.token_ids) == 1]
        if self.config is None or not prefill or not decode:
            return super()._forward(items, metadata, cache)
        hidden = torch.cat([super()._forward(prefill, metadata, cache), super()._forward(decode, metadata, cache)],
                           dim=1)
        first_row, row = {}, 0
        for item in (*prefill, *decode):
            first_row[id(item)] = row
            row += len(item.token_ids)
        return hidden[:, [first_row[id(item)] + k for item in items for k in range(len(item.token_ids))]]

    def run_model(self, metadata: AttentionMetadata, cache: PagedKVCache,
                  rows: tuple[DecodeRows, StepRows] | None = None) -> torch.Tensor:
        """One forward pass through the (graph-wrapped) step module, executed at mark_step. `rows` is always None
        here (static shapes keep the gather: DENSE_DECODE_ROWS)."""
        is_prefill = bool(metadata.chunks)
        hidden: torch.Tensor = self.step_module(
            input_ids=metadata.input_ids,
            position_ids=metadata.position_ids,
            use_cache=False,
            textgen_step=StepContext(metadata, cache, self.kernel, rows),
            **self.plan.forward_call_kwargs(is_prefill),
        ).last_hidden_state
        self.backend.mark_step()
        self.profiler.step()
        return hidden
