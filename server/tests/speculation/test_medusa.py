"""Medusa: a tiny Medusa repository (heads fitted offline to the base model's greedy continuations) loads from its
directory through the launcher's one decision (speculation/config.py), gives the exact greedy output of the base
model, and accepts most candidates; malformed repositories are refused with a clear message before serving."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from textgen_server.testing.medusa_repo import build_medusa_repo
from spec_testlib import EngineRun, Job, random_prompts
from textgen_server.launcher.config import ConfigError, parse_args
from textgen_server.launcher.main import load_config
from textgen_server.speculation.config import MEDUSA_WEIGHTS, SpeculationConfigError, plan_speculation
from textgen_server.testing import build_tiny_model

NUM_HEADS = 3
PROMPTS = random_prompts(6, 12, 700, seed=21)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("medusa-base"), "llama", dtype="float64")


@pytest.fixture(scope="module")
def medusa_dir(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> Path:
    return build_medusa_repo(tmp_path_factory.mktemp("medusa") / "repo", base_dir, PROMPTS, 40, NUM_HEADS)


def test_launcher_loads_base_and_heads_from_the_medusa_directory(medusa_dir: Path, base_dir: Path) -> None:
    config = load_config(parse_args(["--model-id", str(medusa_dir)], {}))
    assert config.model_path == base_dir                      # the shards load the base model...
    plan = config.speculation                                  # ...and the heads, all of them by default (TGI)
    assert (plan.method, plan.num_tokens, plan.medusa and plan.medusa.path) == ("medusa", NUM_HEADS, medusa_dir)
    with pytest.raises(ConfigError, match=f"--speculate 4 exceeds the {NUM_HEADS} Medusa heads"):
        load_config(parse_args(["--model-id", str(medusa_dir), "--speculate", "4"], {}))
    assert load_config(parse_args(["--model-id", str(base_dir), "--speculate", "2"], {})).speculation.method == "ngram"


def test_medusa_greedy_is_exact_and_accepts_most_candidates(medusa_dir: Path, base_dir: Path) -> None:
    jobs = [Job(prompt, 40, arrival_step=i) for i, prompt in enumerate(PROMPTS)]
    plain = EngineRun(base_dir, speculate=0).run(jobs)
    medusa = EngineRun(base_dir, speculate=NUM_HEADS, medusa_path=medusa_dir).run(jobs)
    assert medusa.outputs == plain.outputs
    assert medusa.num_accepted > 0.5 * medusa.num_proposed, (medusa.num_accepted, medusa.num_proposed)
    assert medusa.num_steps < 0.8 * plain.num_steps


def _broken_copy(medusa_dir: Path, tmp_path: Path, config_changes: dict[str, object]) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(medusa_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config.update(config_changes)
    (broken / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return broken


@pytest.mark.parametrize("changes, message", [
    ({"medusa_num_heads": 0}, "medusa_num_heads must be an integer >= 1, got 0"),
    ({"medusa_num_layers": "two"}, "medusa_num_layers must be an integer >= 1"),
    ({"base_model_name_or_path": None}, "needs base_model_name_or_path"),
    ({"medusa_num_heads": NUM_HEADS + 1}, f"missing, unexpected or misshapen tensors ['{NUM_HEADS}.0.linear.bias'"),
    ({"medusa_num_layers": 2}, "misshapen tensors"),
])
def test_malformed_medusa_repositories_are_refused_before_serving(medusa_dir: Path, tmp_path: Path,
                                                                  changes: dict[str, object], message: str) -> None:
    broken = _broken_copy(medusa_dir, tmp_path, changes)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(parse_args(["--model-id", str(broken)], {}))


def test_missing_or_pickled_heads_are_refused(medusa_dir: Path, tmp_path: Path) -> None:
    broken = _broken_copy(medusa_dir, tmp_path, {})
    (broken / MEDUSA_WEIGHTS).rename(broken / "medusa_lm_head.pt")
    with pytest.raises(SpeculationConfigError, match=r"medusa_lm_head.safetensors is missing \(found \['medusa_lm_head.pt'\]"):
        plan_speculation(broken, None)

