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
