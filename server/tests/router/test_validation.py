"""Request validation: TGI's rules, the server limits and the KV-cache capacity, table-driven."""
from __future__ import annotations

import random

import pytest

from textgen_server.router.schemas import GenerateParameters
from textgen_server.router.validation import Limits, ValidationError, validate

LIMITS = Limits(max_input_tokens=10, max_total_tokens=20, max_stop_sequences=2, max_top_n_tokens=5,
                kv_capacity_tokens=16)


@pytest.mark.parametrize(
    ("parameters", "num_prompt_tokens", "message"),
    [
        ({}, 0, "`inputs` cannot be empty"),
        ({"max_new_tokens": 1}, 11, "`inputs` tokens must be <= 10 (--max-input-tokens). Given: 11"),
        ({"max_new_tokens": 0}, 3, "`max_new_tokens` must be strictly positive"),
        ({"max_new_tokens": 15}, 6, "must be <= 20 (--max-total-tokens). Given: 6 `inputs` tokens and 15"),
        ({"max_new_tokens": 8}, 9, "exceed the whole KV cache of this server (16 tokens)"),
        ({"temperature": 0.0}, 3, "`temperature` must be strictly positive, got 0.0"),
        ({"top_p": 1.5}, 3, "`top_p` must be > 0.0 and <= 1.0, got 1.5"),
        ({"typical_p": 0.0}, 3, "`typical_p`"),
        ({"top_k": -1}, 3, "`top_k`"),
        ({"repetition_penalty": 0.0}, 3, "`repetition_penalty`"),
        ({"frequency_penalty": 3.0}, 3, "`frequency_penalty` must be >= -2.0 and <= 2.0, got 3.0"),
        ({"stop": ["a", "b", "c"]}, 3, "up to 2 stop sequences, got 3"),
        ({"stop": [""]}, 3, "must not be empty"),
        ({"top_n_tokens": 6}, 3, "`top_n_tokens` must be >= 0 and <= 5, got 6"),
    ],
)
def test_rejections_say_what_and_how_much(parameters: dict, num_prompt_tokens: int, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate(GenerateParameters(**parameters), list(range(num_prompt_tokens)), LIMITS)
    assert message in str(raised.value)


def test_default_max_new_tokens_fills_up_to_max_total_tokens() -> None:
    limits = Limits(max_input_tokens=10, max_total_tokens=20, max_stop_sequences=2, max_top_n_tokens=5,
                    kv_capacity_tokens=1000)
    assert validate(GenerateParameters(), [1, 2, 3], limits).max_new_tokens == 17


@pytest.mark.parametrize(
    ("parameters", "do_sample"),
    [({}, False), ({"do_sample": True}, True), ({"temperature": 0.7}, True), ({"top_k": 5}, True),
     ({"top_p": 0.9}, True), ({"typical_p": 0.5}, True), ({"repetition_penalty": 1.2}, False)],
)
def test_any_warper_means_sampling_as_in_tgi(parameters: dict, do_sample: bool) -> None:
    valid = validate(GenerateParameters(max_new_tokens=2, **parameters), [1], LIMITS, random.Random(0))
    assert valid.params.do_sample is do_sample
    assert valid.report_seed is do_sample


def test_sampled_request_without_seed_gets_one_and_a_given_seed_is_kept() -> None:
    drawn = validate(GenerateParameters(max_new_tokens=2, do_sample=True), [1], LIMITS, random.Random(0))
    given = validate(GenerateParameters(max_new_tokens=2, do_sample=True, seed=42), [1], LIMITS)
    assert drawn.params.seed != 0
    assert given.params.seed == 42


def test_parameters_reach_the_shard_params() -> None:
    valid = validate(GenerateParameters(max_new_tokens=3, do_sample=True, seed=7, temperature=0.5, top_k=4,
                                        top_p=0.8, typical_p=0.9, repetition_penalty=1.3, frequency_penalty=0.4,
                                        top_n_tokens=2, stop=["x"]), [5, 6], LIMITS)
    p = valid.params
    assert (p.temperature, p.top_k, p.top_p, p.typical_p, p.seed) == (0.5, 4, 0.8, 0.9, 7)
    assert (p.repetition_penalty, p.frequency_penalty, p.top_n_tokens) == (1.3, 0.4, 2)
    assert valid.stop_sequences == ("x",) and valid.max_new_tokens == 3 and valid.prompt_ids == [5, 6]
