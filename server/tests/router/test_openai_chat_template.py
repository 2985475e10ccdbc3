"""Chat prompts from OpenAI messages through the tokenizer's own chat template, and clear 422s when the
messages cannot be rendered."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_server.router.chat import encode_chat_prompt, render_chat_prompt
from textgen_server.router.openai_schemas import ChatMessage
from textgen_server.router.validation import ValidationError
from textgen_server.testing.tiny_models import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tiny_tokenizer()


def messages(*raw: dict[str, Any]) -> list[ChatMessage]:
    return [ChatMessage.model_validate(message) for message in raw]


def test_rendering_matches_transformers_apply_chat_template(tokenizer: Any) -> None:
    raw = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    text = render_chat_prompt(tokenizer, messages(*raw))
    assert text == "<|system|>Be brief.<|end|><|user|>Hi there<|end|><|assistant|>"
    expected_ids = tokenizer.apply_chat_template(raw, add_generation_prompt=True, tokenize=True)["input_ids"]
    # No BOS is added on top of what the template writes (transformers' and vLLM's convention).
    assert encode_chat_prompt(tokenizer, text) == list(expected_ids)


def test_text_content_parts_are_joined(tokenizer: Any) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]
    assert "<|user|>Hello world<|end|>" in render_chat_prompt(tokenizer, messages({"role": "user", "content": parts}))


@pytest.mark.parametrize(("raw", "fragment"), [
    ([], "`messages` must contain at least one message"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "`messages[0].content` has a part of type 'image_url'"),
])
def test_unrenderable_messages_are_422(tokenizer: Any, raw: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(ValidationError) as raised:
        render_chat_prompt(tokenizer, messages(*raw))
    assert fragment in str(raised.value)


def test_a_template_that_raises_gives_its_reason() -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be "
                               "from the user') }}{% endif %}{{ messages[0]['content'] }}")
    with pytest.raises(ValidationError) as raised:
        render_chat_prompt(tokenizer, messages({"role": "assistant", "content": "hi"}))
    assert "first message must be from the user" in str(raised.value)


def test_a_tokenizer_without_template_points_to_the_other_routes() -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValidationError) as raised:
        render_chat_prompt(tokenizer, messages({"role": "user", "content": "hi"}))
    assert "/v1/completions" in str(raised.value)


CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
TOOL_TURNS = [{"role": "user", "content": "1+2?"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
              {"role": "tool", "content": "3", "tool_call_id": "call_1", "name": "add"}]


def test_tool_turns_without_template_support_carry_the_calls_as_json_text(tokenizer: Any) -> None:
    # The tiny template renders role and content only: the call goes into the content, as TGI renders it.
    text = render_chat_prompt(tokenizer, messages(*TOOL_TURNS))
    assert '<|assistant|>[{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": ' in text
    assert "<|tool|>3<|end|>" in text


def test_tool_turns_reach_a_template_that_renders_them(tokenizer: Any) -> None:
    template = ("{% for m in messages %}[{{ m.role }}{% if m.name %} {{ m.name }}{% endif %}"
                "{% if m.tool_call_id %} for {{ m.tool_call_id }}{% endif %}]{{ m.content }}"
                "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }} {{ c.function.arguments.b }}{% endfor %}"
                "{% endfor %}")
    tokenizer.chat_template, saved = template, tokenizer.chat_template
    try:
        text = render_chat_prompt(tokenizer, messages(*TOOL_TURNS))
    finally:
        tokenizer.chat_template = saved
    # Arguments arrive as an object (c.function.arguments.b), and nothing is duplicated into the content.
    assert text == "[user]1+2?[assistant]CALL add 2[tool add for call_1]3"
