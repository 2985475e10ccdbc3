"""find_problems: a missing Secret and an impossible accelerator count, with messages a user can act on."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.problems import find_problems

NODES = {"nvidia.com/gpu": 8, "habana.ai/gaudi": 8}


def test_missing_token_secret(make_tgs: Any) -> None:
    tgs = make_tgs(model={"id": "m", "tokenSecretRef": {"name": "hf-token"}})
    [problem] = find_problems(tgs, secret_exists=False, max_devices_per_node=NODES)
    assert problem.reason == "SecretNotFound" and problem.blocking
    assert "hf-token" in problem.message and "kubectl -n ns create secret generic hf-token" in problem.message
    assert find_problems(tgs, secret_exists=True, max_devices_per_node=NODES) == []


@pytest.mark.parametrize("accelerator, nodes, reason", [
    ({"type": "nvidia", "count": 16}, NODES, "AcceleratorCountUnsatisfiable"),
    ({"type": "nvidia", "count": 8}, NODES, None),
    ({"type": "gaudi", "count": 8}, {"nvidia.com/gpu": 8}, "NoAcceleratorNodes"),
    ({"type": "nvidia", "count": 64}, None, None),          # nodes not known yet: no verdict
    ({"type": "cpu", "count": 4}, {}, None),
])
def test_accelerator_count_must_fit_one_node(make_tgs: Any, accelerator: dict[str, Any],
                                             nodes: dict[str, int] | None, reason: str | None) -> None:
    problems = find_problems(make_tgs(accelerator=accelerator), None, nodes)
    assert [p.reason for p in problems] == ([reason] if reason else [])
    if reason == "AcceleratorCountUnsatisfiable":
        assert "16" in problems[0].message and "at most 8" in problems[0].message


@pytest.mark.parametrize("spec, reason, words", [
    ({"model": {"id": "m", "quantize": "gptq"}}, "QuantizationNotImplemented", ["'gptq'", "remove spec.model.quantize"]),
    ({"args": ["--num-shard", "4"]}, "DuplicateLauncherArgument", ["--num-shard", "spec.args"]),
    ({"args": ["--max-input-tokens=9"], "limits": {"maxInputTokens": 8, "maxTotalTokens": 16}},
     "DuplicateLauncherArgument", ["--max-input-tokens"]),
    ({"env": [{"name": "PORT", "value": "8080"}]}, "DuplicateLauncherArgument", ["PORT (--port)", "spec.env"]),
    ({"env": [{"name": "HOSTNAME", "value": "x"}]}, "DuplicateLauncherArgument", ["HOSTNAME (--hostname)"]),
])
def test_fields_the_server_cannot_honour_block_with_a_reason(make_tgs: Any, spec: dict[str, Any], reason: str,
                                                             words: list[str]) -> None:
    # make_tgs applies the CRD's defaults but not its CEL rules: this is an object stored before the rules existed.
    [problem] = find_problems(make_tgs(**spec), None, NODES)
    assert problem.reason == reason and problem.blocking
    assert all(word in problem.message for word in words), problem.message


@pytest.mark.parametrize("spec", [
    {"args": ["--json-output", "--max-best-of", "4"]},          # flags the operator does not set
    {"args": ["--max-input-tokens", "9"]},                      # limits.maxInputTokens unset: not generated
    {"env": [{"name": "MAX_TOTAL_TOKENS", "value": "9"}]},      # likewise
    {"env": [{"name": "LOG_LEVEL", "value": "debug"}]},
    {"speculate": 0},
    {"speculate": 4},                                           # speculative decoding is implemented (issue 14)
])
def test_extra_args_and_env_that_set_nothing_twice_are_fine(make_tgs: Any, spec: dict[str, Any]) -> None:
    assert find_problems(make_tgs(**spec), None, NODES) == []


@pytest.mark.parametrize("spec", [
    {"rollout": {"autoRollback": True}}, {"rollout": {"autoRollback": False}}, {"rollout": {"maxSurge": 2}},
    {"rollout": {"paused": True}},
])
def test_rollout_options_are_implemented_so_no_problem_is_reported(make_tgs: Any, spec: dict[str, Any]) -> None:
    # The rollout controller (textgen_operator/rollout) honours them; tests/rollout/ shows how.
    assert find_problems(make_tgs(**spec), None, NODES) == []
