"""OpenAI request fields -> TGI parameters per choice, and the 422s for what we cannot honour."""
from __future__ import annotations

import random
from typing import Any

import pytest

from textgen_server.router.openai_params import (
    build_choice_parameters,
    check_chat_request,
    check_completion_request,
    openai_message,
)
from textgen_server.router.openai_schemas import ChatCompletionRequest, CompletionRequest
from textgen_server.router.validation import ValidationError

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})


def test_temperature_zero_is_greedy_and_drops_nucleus_sampling() -> None:
    [params] = build_choice_parameters(chat(temperature=0, top_p=0.5, seed=3), 10, None, random.Random(0))
    assert (params.do_sample, params.temperature, params.top_p, params.seed) == (False, None, None, None)
    assert params.max_new_tokens == 10


def test_openai_default_temperature_samples() -> None:
    [params] = build_choice_parameters(chat(), None, None, random.Random(0))
    assert params.do_sample and params.temperature is None and params.seed is not None


def test_n_choices_get_successive_seeds_from_the_given_one() -> None:
    choices = build_choice_parameters(chat(n=3, seed=2**64 - 2, temperature=0.7), 5, 2, random.Random(0))
    assert [p.seed for p in choices] == [2**64 - 2, 2**64 - 1, 0]
    assert {(p.temperature, p.top_n_tokens, p.max_new_tokens) for p in choices} == {(0.7, 2, 5)}


def test_stop_string_frequency_penalty_and_ignore_eos_carry_over() -> None:
    [params] = build_choice_parameters(chat(stop="###", frequency_penalty=0.5, ignore_eos=True), 5, None,
                                       random.Random(0))
    assert (params.stop, params.frequency_penalty, params.ignore_eos_token) == (["###"], 0.5, True)


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"temperature": -0.1}, "`temperature` must be >= 0 and <= 2"),
    ({"temperature": float("nan")}, "`temperature` must be >= 0 and <= 2"),
    ({"temperature": 2.5}, "`temperature` must be >= 0 and <= 2"),
    ({"n": 0}, "`n` must be at least 1"),
    ({"presence_penalty": 1.0}, "`presence_penalty` is not supported yet"),
    ({"logit_bias": {"12": 5}}, "`logit_bias` is not supported yet"),
    ({"guided_json": {"type": "object"}}, "`guided_json` (another server's constrained decoding) is not supported"),
    ({"grammar": {"type": "regex", "value": "a+"}}, "use `response_format` (json_object or json_schema)"),
    ({"top_logprobs": 2}, "`top_logprobs` needs `logprobs: true`"),
    ({"logprobs": True, "top_logprobs": 6}, "`top_logprobs` must be >= 0 and <= 5 (--max-top-n-tokens)"),
    ({"max_tokens": 0}, "`max_tokens` must be at least 1"),
    ({"max_completion_tokens": -3}, "`max_completion_tokens` must be at least 1, got -3"),
])
def test_chat_requests_we_cannot_honour_are_rejected_by_name(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as raised:
        check_chat_request(chat(**fields), max_top_n_tokens=5)
    assert fragment in str(raised.value)


def test_supported_chat_fields_pass() -> None:
    check_chat_request(chat(temperature=0, presence_penalty=0, logprobs=True, top_logprobs=5, tool_choice="none",
                            response_format={"type": "text"}, logit_bias={}), max_top_n_tokens=5)


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"prompt": []}, "`prompt` is an empty list"),
    ({"logprobs": 9}, "`logprobs` must be >= 0 and <= 5"),
    ({"echo": True, "logprobs": 1}, "`echo` with `logprobs` is not supported yet"),
    ({"suffix": "end"}, "`suffix` (insertion) is not supported"),
    ({"best_of": 3}, "`best_of` 3 is not supported"),
    ({"guided_regex": "a+"}, "`guided_regex` (another server's constrained decoding) is not supported"),
])
def test_completion_requests_we_cannot_honour_are_rejected_by_name(fields: dict[str, Any], fragment: str) -> None:
    body = CompletionRequest.model_validate({"prompt": "x", **fields})
    with pytest.raises(ValidationError) as raised:
        check_completion_request(body, max_top_n_tokens=5)
    assert fragment in str(raised.value)


def test_tgi_messages_are_reworded_with_openai_field_names() -> None:
    message = ("`inputs` tokens + `max_new_tokens` must be <= 512 (--max-total-tokens). Given: 5 `inputs` tokens "
               "and 600 `max_new_tokens`")
    assert openai_message(message) == ("prompt tokens + `max_tokens` must be <= 512 (--max-total-tokens). Given: "
                                       "5 prompt tokens and 600 `max_tokens`")
