"""The Gaudi backend's decisions (gaudi/plan.py): graphs, FusedSDPA, runtime env, FP8, profiler, HCCL."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_server.gaudi.config import parse_gaudi_env
from textgen_server.gaudi.plan import FP8_RUNTIME_DEFAULTS, apply_runtime_env, build_plan


def plan_for(env: dict[str, str], rank: int = 0, world_size: int = 1) -> Any:
    return build_plan(parse_gaudi_env(env, num_shards=world_size), rank, world_size)


@pytest.mark.parametrize("env,prefill,decode", [
    ({}, {"bypass_hpu_graphs": False}, {"bypass_hpu_graphs": False}),
    ({"LIMIT_HPU_GRAPH": "true"}, {"bypass_hpu_graphs": True}, {"bypass_hpu_graphs": False}),
    ({"ENABLE_HPU_GRAPH": "false"}, {}, {}),      # no graph wrapper: the kwarg would be unknown to the model
])
def test_graph_bypass_per_phase(env: dict[str, str], prefill: dict[str, bool], decode: dict[str, bool]) -> None:
    plan = plan_for(env)
    assert plan.wrap_in_hpu_graph is (env.get("ENABLE_HPU_GRAPH") != "false")
    assert plan.graph_kwargs == {"disable_tensor_cache": True}
    for is_prefill, expected in ((True, prefill), (False, decode)):
        kwargs = plan.forward_call_kwargs(is_prefill)
        assert kwargs == expected          # nothing else: our model takes no optimum-habana kwargs


@pytest.mark.parametrize("env,fused,recompute", [
    ({}, False, False),
    ({"USE_FLASH_ATTENTION": "true"}, True, False),
    ({"USE_FLASH_ATTENTION": "true", "FLASH_ATTENTION_RECOMPUTE": "true"}, True, True),
])
def test_fused_sdpa(env: dict[str, str], fused: bool, recompute: bool) -> None:
    plan = plan_for(env)
    assert (plan.fused_sdpa, plan.fused_sdpa_recompute) == (fused, recompute)


def test_runtime_env_single_card_bf16() -> None:
    plan = plan_for({})
    assert plan.runtime_env == {"PT_HPU_LAZY_MODE": "1"}
    assert plan.distributed_backend is None and plan.quant_config is None


def test_runtime_env_eight_cards_fp8() -> None:
    plan = plan_for({"PT_HPU_ENABLE_LAZY_COLLECTIVES": "true", "QUANT_CONFIG": "/q/maxabs_quant.json"},
                    rank=3, world_size=8)
    assert plan.runtime_env == {"PT_HPU_LAZY_MODE": "1", "PT_HPU_ENABLE_LAZY_COLLECTIVES": "true",
                                **FP8_RUNTIME_DEFAULTS}
    assert plan.distributed_backend == "hccl" and plan.quant_config == "/q/maxabs_quant.json"


def test_apply_runtime_env_keeps_the_users_values() -> None:
    plan = plan_for({"QUANT_CONFIG": "q.json"})
    environ = {"ENABLE_EXPERIMENTAL_FLAGS": "false", "PATH": "/bin"}
    added = apply_runtime_env(plan, environ)
    assert environ["ENABLE_EXPERIMENTAL_FLAGS"] == "false"          # the user's own value wins
    assert "ENABLE_EXPERIMENTAL_FLAGS" not in added and added["PT_HPU_LAZY_MODE"] == "1"
    assert environ["UPDATE_MME_OUTPUT_PRECISION_FILTER"] == "v_proj,matmul_av"


@pytest.mark.parametrize("rank,expected", [(0, True), (1, False), (2, True)])
def test_profiler_only_on_listed_ranks(rank: int, expected: bool) -> None:
    plan = plan_for({"PROF_STEP": "4", "PROF_WARMUPSTEP": "2", "PROF_WAITSTEP": "1", "PROF_RANKS": "0,2",
                     "PROF_PATH": "/data/prof", "PROF_RECORD_SHAPES": "true", "PT_HPU_ENABLE_LAZY_COLLECTIVES": "1"},
                    rank=rank, world_size=4)
    assert (plan.profiler is not None) is expected
    if plan.profiler is not None:
        assert (plan.profiler.wait, plan.profiler.warmup, plan.profiler.active, plan.profiler.output_dir,
                plan.profiler.record_shapes) == (1, 2, 4, "/data/prof", True)
        assert any("profiling 4 steps" in note for note in plan.notes)


def test_notes_say_what_runs() -> None:
    note = plan_for({"LIMIT_HPU_GRAPH": "true", "USE_FLASH_ATTENTION": "true", "WARMUP_ENABLED": "false"}).notes[0]
    assert note == "rank 0: HPU graphs decode only (LIMIT_HPU_GRAPH); fused SDPA for prefill on; FP8 off; warmup off"
