"""TGI on Gaudi's environment (gaudi/config.py): names, defaults, typed values, and refusals that name the variable."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from textgen_server.gaudi.config import (ENV_NAMES, VARIABLES, GaudiConfig, GaudiConfigError, ProfilerConfig,
                                         check_bucket_limits, check_quant_config, parse_gaudi_env)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gaudi.md"


def test_defaults_are_tgi_gaudis() -> None:
    config = parse_gaudi_env({})
    assert config == GaudiConfig()
    assert (config.enable_hpu_graph, config.limit_hpu_graph, config.batch_bucket_size,
            config.prefill_batch_bucket_size, config.pad_sequence_to_multiple_of, config.skip_tokenizer_in_tgi,
            config.warmup_enabled, config.queue_threshold_ms, config.use_flash_attention,
            config.flash_attention_recompute, config.quant_config) == (
        True, False, 8, 4, 128, False, True, 120, False, False, None)
    assert config.profiler == ProfilerConfig(0, 0, 0, "/tmp/hpu_profile", (0,), False)
    assert not config.profiler.enabled


def test_every_documented_default_parses_to_the_dataclass_default() -> None:
    for variable in VARIABLES:
        if variable.default == "(unset)":
            assert getattr(GaudiConfig(), variable.field) is None
            continue
        holder = ProfilerConfig() if variable.field.startswith("profiler.") else GaudiConfig()
        assert variable.parse(variable.default) == getattr(holder, variable.field.split(".")[-1]), variable.name


def test_operator_example_values() -> None:
    config = parse_gaudi_env({"BATCH_BUCKET_SIZE": "256", "PREFILL_BATCH_BUCKET_SIZE": "4",
                              "PAD_SEQUENCE_TO_MULTIPLE_OF": "64", "ENABLE_HPU_GRAPH": "true",
                              "LIMIT_HPU_GRAPH": "true", "USE_FLASH_ATTENTION": "true",
                              "FLASH_ATTENTION_RECOMPUTE": "true", "PT_HPU_ENABLE_LAZY_COLLECTIVES": "true",
                              "QUEUE_THRESHOLD_MS": "0", "WARMUP_ENABLED": "false"}, num_shards=8)
    assert (config.batch_bucket_size, config.prefill_batch_bucket_size, config.pad_sequence_to_multiple_of) == (
        256, 4, 64)
    assert config.hpu_graphs_for_decode and not config.hpu_graphs_for_prefill
    assert config.use_flash_attention and config.flash_attention_recompute and config.lazy_collectives
    assert config.queue_threshold_ms == 0 and not config.warmup_enabled


@pytest.mark.parametrize("text,expected", [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                           ("false", False), ("0", False), ("No", False)])
def test_booleans(text: str, expected: bool) -> None:
    assert parse_gaudi_env({"WARMUP_ENABLED": text}).warmup_enabled is expected


@pytest.mark.parametrize("env,fragment", [
    ({"ENABLE_HPU_GRAPH": "ture"}, "ENABLE_HPU_GRAPH='ture' is invalid: write true or false"),
    ({"BATCH_BUCKET_SIZE": "0"}, "BATCH_BUCKET_SIZE='0' is invalid: it must be at least 1"),
    ({"BATCH_BUCKET_SIZE": "eight"}, "BATCH_BUCKET_SIZE='eight' is invalid: write a whole number"),
    ({"PREFILL_BATCH_BUCKET_SIZE": "-4"}, "PREFILL_BATCH_BUCKET_SIZE='-4'"),
    ({"PAD_SEQUENCE_TO_MULTIPLE_OF": "0"}, "PAD_SEQUENCE_TO_MULTIPLE_OF='0'"),
    ({"QUEUE_THRESHOLD_MS": "1.5"}, "QUEUE_THRESHOLD_MS='1.5'"),
    ({"PROF_STEP": "1", "PROF_RANKS": "0;1"}, "PROF_RANKS='0;1' is invalid: write a comma-separated list"),
    ({"PROF_STEP": "1", "PROF_PATH": " "}, "PROF_PATH=' ' is invalid"),
    ({"LIMIT_HPU_GRAPH": "true", "ENABLE_HPU_GRAPH": "false"}, "set ENABLE_HPU_GRAPH=true or unset LIMIT_HPU_GRAPH"),
    ({"FLASH_ATTENTION_RECOMPUTE": "true"}, "FLASH_ATTENTION_RECOMPUTE=true needs USE_FLASH_ATTENTION=true"),
    ({"SKIP_TOKENIZER_IN_TGI": "true"}, "SKIP_TOKENIZER_IN_TGI=true (inputs and outputs as comma-separated"),
    ({"PT_HPU_LAZY_MODE": "0"}, "PT_HPU_LAZY_MODE=0"),
    ({"PROF_PATH": "/x", "PROF_RANKS": "1"}, "PROF_PATH, PROF_RANKS set but PROF_STEP is 0"),
    ({"PROF_STEP": "5", "PROF_WARMUPSTEP": "1", "PROF_RANKS": "0,3"}, "names rank(s) [3] but there are 2 shard(s)"),
])
def test_refusals_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(GaudiConfigError) as error:
        parse_gaudi_env({"PT_HPU_ENABLE_LAZY_COLLECTIVES": "true", **env}, num_shards=2)
    assert fragment in str(error.value)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(GaudiConfigError) as error:
        parse_gaudi_env({"BATCH_BUCKET_SIZE": "x", "WARMUP_ENABLED": "maybe"})
    assert "BATCH_BUCKET_SIZE" in str(error.value) and "WARMUP_ENABLED" in str(error.value)


def test_multi_card_hpu_graphs_need_lazy_collectives() -> None:
    with pytest.raises(GaudiConfigError, match="PT_HPU_ENABLE_LAZY_COLLECTIVES=true"):
        parse_gaudi_env({}, num_shards=8)
    assert parse_gaudi_env({"ENABLE_HPU_GRAPH": "false"}, num_shards=8).lazy_collectives is False
    assert parse_gaudi_env({}, num_shards=1).enable_hpu_graph


def test_profiler_ranks() -> None:
    profiler = parse_gaudi_env({"PROF_STEP": "3", "PROF_RANKS": "0, 2", "PROF_WARMUPSTEP": "1",
                                "PT_HPU_ENABLE_LAZY_COLLECTIVES": "true"},
                               num_shards=4).profiler
    assert profiler.enabled and profiler.ranks == (0, 2) and profiler.warmup_steps == 1
    assert [profiler.profiles_rank(rank) for rank in range(4)] == [True, False, True, False]


def test_empty_quant_config_means_none_as_in_tgi_gaudi() -> None:
    assert parse_gaudi_env({"QUANT_CONFIG": ""}).quant_config is None
    assert parse_gaudi_env({"QUANT_CONFIG": "q.json"}).quant_config == "q.json"


def test_bucket_limits_against_max_input_tokens() -> None:
    config = parse_gaudi_env({"PAD_SEQUENCE_TO_MULTIPLE_OF": "256"})
    assert check_bucket_limits(config, 1024) == []
    assert "lower it to at most 100" in check_bucket_limits(config, 100)[0]


def _write_quant(tmp_path: Path, mode: str, measured: bool) -> str:
    (tmp_path / "quantization_config").mkdir()
    document = {"method": "HOOKS", "mode": mode, "observer": "maxabs", "dump_stats_path": "./hqt_output/measure"}
    (tmp_path / "quantization_config" / "maxabs_quant.json").write_text(json.dumps(document))
    if measured:
        (tmp_path / "hqt_output").mkdir()
        (tmp_path / "hqt_output" / "measure_hooks_maxabs_0_1.json").write_text("{}")
    return "./quantization_config/maxabs_quant.json"


def test_quant_config_with_measurement_is_accepted(tmp_path: Path) -> None:
    path = _write_quant(tmp_path, "QUANTIZE", measured=True)
    assert check_quant_config(path, cwd=str(tmp_path))["observer"] == "maxabs"


@pytest.mark.parametrize("mode,measured,fragment", [
    ("QUANTIZE", False, "no measured statistics at ./hqt_output/measure_hooks_*"),
    ("MEASURE", True, "has mode 'MEASURE': serving needs a QUANTIZE config"),
])
def test_quant_config_refusals(tmp_path: Path, mode: str, measured: bool, fragment: str) -> None:
    path = _write_quant(tmp_path, mode, measured)
    with pytest.raises(GaudiConfigError, match=re.escape(fragment)):
        check_quant_config(path, cwd=str(tmp_path))


def test_quant_config_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text("mode: QUANTIZE")
    with pytest.raises(GaudiConfigError, match="cannot read it as JSON"):
        check_quant_config("q.json", cwd=str(tmp_path))
    with pytest.raises(GaudiConfigError, match="cannot read it as JSON"):
        check_quant_config("missing.json", cwd=str(tmp_path))


def test_the_docs_table_lists_every_variable_with_its_default() -> None:
    rows = {match.group(1): match.group(2).strip() for match in
            re.finditer(r"^\| `([A-Z_]+)` \| ([^|]+) \|", DOCS.read_text(), flags=re.MULTILINE)}
    assert set(rows) == set(ENV_NAMES)
    for variable in VARIABLES:
        assert rows[variable.name] == f"`{variable.default}`" or rows[variable.name] == variable.default, \
            variable.name
