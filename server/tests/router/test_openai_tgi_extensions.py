"""OpenAI request fields around tools that TGI honours or refuses, checked on the job a request becomes (the real
tiny tokenizer and TGI's validation; no model): TGI's `repetition_penalty` on /v1/completions reaches every
choice, a bare `tool_choice` string names a function (TGI's ToolChoice), the deprecated `functions` /
`function_call` and a `tool_prompt` without tools are refused by name, `parallel_tool_calls` is accepted (one
call per choice allows both)."""
from __future__ import annotations

import random
from typing import Any

import pytest

from textgen_server.grammar.tools import NO_TOOL, build_tool_plan
from textgen_server.router.openai_jobs import build_completion_job
from textgen_server.router.openai_responses import ResponseMeta
from textgen_server.router.openai_schemas import ChatCompletionRequest, CompletionRequest
from textgen_server.router.openai_tools import chat_tool_plan
from textgen_server.router.validation import Limits, ValidationError
from textgen_server.testing.tiny_models import build_tiny_tokenizer

LIMITS = Limits(max_input_tokens=100, max_total_tokens=200, max_stop_sequences=4, max_top_n_tokens=5,
                kv_capacity_tokens=10_000)
ADD = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
META = ResponseMeta.new("cmpl", "m", "0")


def _completion_job(**fields: Any) -> Any:
    body = CompletionRequest.model_validate({"prompt": ["one", "two"], "n": 2, **fields})
    return build_completion_job(body, build_tiny_tokenizer(), LIMITS, META, 128, random.Random(0))


def test_completions_repetition_penalty_reaches_every_choice() -> None:
    job = _completion_job(repetition_penalty=1.3)
    assert [sub.request.params.repetition_penalty for sub in job.subs] == pytest.approx([1.3] * 4)
    assert {sub.request.params.repetition_penalty for sub in _completion_job().subs} == {1.0}
    with pytest.raises(ValidationError, match="`repetition_penalty` must be strictly positive, got 0.0"):
        _completion_job(repetition_penalty=0.0)


def test_a_tool_choice_string_names_a_function_as_in_tgi() -> None:
    plan = build_tool_plan([ADD], "add")
    assert plan is not None and not plan.allows_text and plan.tools == [ADD]
    with pytest.raises(ValueError, match="names the function 'sometimes', which is not in `tools`"):
        build_tool_plan([ADD], "sometimes")


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"functions": [ADD["function"]]}, "`functions` is OpenAI's deprecated form and is not supported; send `tools`"),
    ({"function_call": "auto"}, "`function_call` is OpenAI's deprecated form and is not supported; send "
                                "`tool_choice`"),
    ({"tool_prompt": "Use a tool."}, "`tool_prompt` needs `tools`"),
])
def test_deprecated_function_fields_and_a_lone_tool_prompt_are_refused_by_name(fields: dict[str, Any], fragment: str) -> None:
    body = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **fields})
    with pytest.raises(ValidationError) as raised:
        chat_tool_plan(body)
    assert fragment in str(raised.value)


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls_is_accepted(parallel: bool) -> None:
    body = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "tools": [ADD],
                                                 "parallel_tool_calls": parallel})
    plan = chat_tool_plan(body)
    assert plan is not None and [t["function"]["name"] for t in plan.tools] == ["add", NO_TOOL]
