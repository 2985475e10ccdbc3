"""TGI's settings: every flag and environment variable of TGI's launcher is honoured or refused by name."""
from __future__ import annotations

from pathlib import Path

import pytest

from textgen_server.launcher.config import ConfigError, build_config, build_parser, parse_args
from textgen_server.launcher.tgi_env import (
    HONOURED_WITHOUT_FLAG,
    REFUSED,
    TGI_LAUNCHER_ENV,
    TGI_QUANTIZE_METHODS,
    honoured_environment,
    repeated_flags,
)

MODEL = {"max_position_embeddings": 1024, "num_attention_heads": 8, "num_key_value_heads": 8,
         "intermediate_size": 64}
HONOURED = honoured_environment(build_parser({})) | HONOURED_WITHOUT_FLAG


def _config(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return build_config(parse_args(argv, env or {}), Path("/m"), MODEL)


def test_every_tgi_variable_is_honoured_or_refused_never_both() -> None:
    unaccounted = [name for name in TGI_LAUNCHER_ENV if name not in HONOURED and name not in REFUSED]
    both = sorted(set(REFUSED) & HONOURED)
    assert unaccounted == [], "add these to tgi_env.REFUSED with a reason, or honour them in config.py"
    assert both == [], "honoured now: remove them from tgi_env.REFUSED"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_each_refused_variable_is_named_with_its_reason(name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_args([], {name: "some-value"})
    message = str(raised.value)
    assert f"{name}='some-value'" in message and REFUSED[name][0] in message and f"unset {name}" in message


@pytest.mark.parametrize("name, value", [("USAGE_STATS", "off"), ("CUDA_GRAPHS", "0"), ("NGROK", "false"),
                                         ("DISABLE_GRAMMAR_SUPPORT", "true"), ("CUDA_MEMORY_FRACTION", "1.0")])
def test_values_that_ask_for_what_the_server_does_anyway_are_accepted(name: str, value: str) -> None:
    parse_args([], {name: value})


def test_kubernetes_hostname_is_read_but_the_flag_wins() -> None:
    """Kubernetes sets HOSTNAME to the pod name in every container; the operator passes --hostname explicitly."""
    assert parse_args([], {"HOSTNAME": "demo-0"}).hostname == "demo-0"
    assert parse_args(["--hostname", "0.0.0.0"], {"HOSTNAME": "demo-0"}).hostname == "0.0.0.0"


@pytest.mark.parametrize("method", TGI_QUANTIZE_METHODS)
def test_every_tgi_quantization_method_is_refused_by_name(method: str) -> None:
    for argv, env in ((["--quantize", method], {}), ([], {"QUANTIZE": method})):
        with pytest.raises(ConfigError, match=f"--quantize {method} is not implemented"):
            _config(argv, env)


def test_an_unknown_quantization_method_says_so() -> None:
    with pytest.raises(ConfigError, match="nor is it one of TGI's methods"):
        _config(["--quantize", "int3"])


@pytest.mark.parametrize("argv, env, expected", [
    (["--speculate", "0"], {}, 0), ([], {"SPECULATE": "0"}, 0), (["--speculate", "3"], {}, 3), ([], {"SPECULATE": "2"}, 2),
])
def test_speculate_is_read_from_the_flag_and_tgi_variable(argv: list[str], env: dict[str, str], expected: int) -> None:
    # Honoured (speculation/config.py checks it against the model: server/tests/speculation/test_plan.py).
    assert _config(argv, env).args.speculate == expected


@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, False), (["--trust-remote-code"], {}, True), ([], {"TRUST_REMOTE_CODE": "true"}, True),
])
def test_trust_remote_code_flag_and_variable(argv: list[str], env: dict[str, str], expected: bool) -> None:
    assert parse_args(argv, env).trust_remote_code is expected


@pytest.mark.parametrize("value, ok", [("0", True), ("7", True), ("-1", False)])
def test_max_waiting_tokens_zero_is_tgis_admit_every_step(value: str, ok: bool) -> None:
    if ok:
        assert _config(["--max-waiting-tokens", value]).args.max_waiting_tokens == int(value)
    else:
        with pytest.raises(ConfigError, match="--max-waiting-tokens must be >= 0"):
            _config(["--max-waiting-tokens", value])


def test_a_repeated_flag_is_refused_not_last_wins() -> None:
    with pytest.raises(ConfigError, match="--port is given more than once"):
        parse_args(["--port", "80", "--port=8080"], {})
    assert parse_args(["--cors-allow-origin", "a", "--cors-allow-origin", "b"], {}).cors_allow_origin == ("a", "b")
    assert repeated_flags(["--x", "1", "--", "--x"], []) == ["--x"]


def test_abbreviated_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--max-input", "5"], {})
    assert "unrecognized arguments: --max-input" in capsys.readouterr().err


@pytest.mark.parametrize("env, warned", [
    ({"TEXTGEN_DEVICE_OVERRIDE": "cpu", "BATCH_BUCKET_SIZE": "8", "ENABLE_HPU_GRAPH": "true"},
     ["BATCH_BUCKET_SIZE", "ENABLE_HPU_GRAPH"]),
    ({"NCCL_IB_DISABLE": "1"}, ["NCCL_IB_DISABLE"]),          # a CUDA variable, shards on the CPU
    ({}, []),
])
def test_accelerator_variables_for_another_device_are_reported_not_dropped(env: dict[str, str],
                                                                           warned: list[str]) -> None:
    config = _config(["--device", "cpu"], env)
    if warned:
        [warning] = config.warnings
        assert all(name in warning for name in warned) and "not applied" in warning and "on cpu" in warning
    else:
        assert config.warnings == ()


def test_nccl_settings_apply_on_cuda() -> None:
    assert _config(["--device", "cuda"], {"NCCL_IB_DISABLE": "1"}).warnings == ()
