"""TGI's watermark settings: --watermark-gamma / --watermark-delta [WATERMARK_GAMMA / WATERMARK_DELTA], TGI's
defaults, checked at start, and given to the requests that ask for `watermark: true`."""
from __future__ import annotations

from pathlib import Path

import pytest

from textgen_server.launcher.config import ConfigError, build_config, parse_args
from textgen_server.protocol import WatermarkParams
from textgen_server.router.schemas import GenerateParameters
from textgen_server.router.validation import Limits, validate

MODEL = {"max_position_embeddings": 1024, "num_attention_heads": 8, "num_key_value_heads": 8,
         "intermediate_size": 64}


@pytest.mark.parametrize(("argv", "env", "expected"), [
    ([], {}, (0.5, 2.0)),
    (["--watermark-gamma", "0.25", "--watermark-delta", "3"], {}, (0.25, 3.0)),
    ([], {"WATERMARK_GAMMA": "0.3", "WATERMARK_DELTA": "1.5"}, (0.3, 1.5)),
    (["--watermark-gamma", "0.4"], {"WATERMARK_GAMMA": "0.3"}, (0.4, 2.0)),  # the flag wins
])
def test_flags_and_tgi_variables(argv: list[str], env: dict[str, str], expected: tuple[float, float]) -> None:
    args = build_config(parse_args(argv, env), Path("/m"), MODEL).args
    assert (args.watermark_gamma, args.watermark_delta) == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["--watermark-gamma", "0"], "--watermark-gamma must be strictly between 0 and 1"),
    (["--watermark-gamma", "1.5"], "got 1.5"),
    (["--watermark-gamma", "nan"], "--watermark-gamma must be strictly between 0 and 1"),
    (["--watermark-delta", "0"], "--watermark-delta must be a positive finite logit bias, got 0.0"),
    (["--watermark-delta", "inf"], "--watermark-delta must be a positive finite logit bias"),
])
def test_values_that_cannot_watermark_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_config(parse_args(argv, {}), Path("/m"), MODEL)


def test_only_requests_that_ask_get_the_servers_watermark() -> None:
    limits = Limits(max_input_tokens=10, max_total_tokens=20, max_stop_sequences=4, max_top_n_tokens=5,
                    kv_capacity_tokens=64, watermark=WatermarkParams(gamma=0.25, delta=3.0))
    asked = validate(GenerateParameters(watermark=True, max_new_tokens=2), [1, 2], limits)
    assert asked.params.watermark == WatermarkParams(gamma=0.25, delta=3.0)
    assert validate(GenerateParameters(max_new_tokens=2), [1, 2], limits).params.watermark is None
