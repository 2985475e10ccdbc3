"""Chat prompts: OpenAI messages -> the model's own chat template -> prompt token ids.

The template is the tokenizer's (`chat_template` in tokenizer_config.json), rendered with
`add_generation_prompt=True` so the model continues as the assistant. The rendered text is tokenized without
adding special tokens, as transformers' `apply_chat_template(tokenize=True)` and vLLM do: templates write BOS
themselves when the model wants one, and adding it again would double it.

A conversation that used tools reaches the template whole: `name` and `tool_call_id` as message keys, and an
assistant turn's `tool_calls` as the template's own `tool_calls` (arguments as an object, as transformers' chat
format has them) when the template renders them, else as JSON text in the turn's content (TGI's rendering).
"""
from __future__ import annotations

import json
import re
from typing import Any, Protocol

from textgen_server.grammar.tools import ToolPlan
from textgen_server.router.openai_schemas import ChatMessage
from textgen_server.router.openai_tools import with_tools
from textgen_server.router.validation import ValidationError


class ChatTokenizer(Protocol):
    """The part of a transformers tokenizer used here."""

    chat_template: str | None

    def apply_chat_template(self, conversation: list[dict[str, Any]], **kwargs: Any) -> Any: ...

    def __call__(self, text: str, add_special_tokens: bool = ...) -> Any: ...


_TOOL_CALLS_VARIABLE = re.compile(r"\btool_calls\b")


def build_template_messages(messages: list[ChatMessage], chat_template: str = "") -> list[dict[str, Any]]:
    """Plain dicts for the template: content parts joined into one string (text parts only), tool turns kept."""
    if not messages:
        raise ValidationError("`messages` must contain at least one message")
    native_calls = bool(_TOOL_CALLS_VARIABLE.search(chat_template))
    return [_template_message(message, index, native_calls) for index, message in enumerate(messages)]


def _template_message(message: ChatMessage, index: int, native_calls: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "content": _content_text(message, index)}
    for key in ("name", "tool_call_id"):
        if getattr(message, key) is not None:
            entry[key] = getattr(message, key)
    if message.tool_calls:
        if native_calls:
            entry["tool_calls"] = [_template_call(call) for call in message.tool_calls]
        else:
            entry["content"] += json.dumps(message.tool_calls, ensure_ascii=False)
    return entry


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    # OpenAI sends `arguments` as JSON text; templates expect the object (they render it with tojson).
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # not JSON: the template gets the text the client sent
    return {**call, "function": function}


def render_chat_prompt(tokenizer: ChatTokenizer, messages: list[ChatMessage], tools: ToolPlan | None = None,
                       tool_prompt: str | None = None) -> str:
    """The prompt text the chat template makes of `messages` (and of the tools the model may call, see
    openai_tools.with_tools); ValidationError when it cannot render them."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValidationError("this model's tokenizer has no chat template, so /v1/chat/completions cannot build "
                              "a prompt; send the prompt text to /v1/completions or /generate instead")
    conversation, extra = build_template_messages(messages, str(tokenizer.chat_template)), dict[str, Any]()
    if tools is not None:
        conversation, extra = with_tools(conversation, tools, tool_prompt, str(tokenizer.chat_template))
    try:
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False, **extra)
    except Exception as error:  # jinja2 errors, including the template's own raise_exception(...)
        raise ValidationError(f"the model's chat template rejected these messages: {error}; check the roles "
                              "and their order (many templates want user/assistant turns to alternate)") from error
    if not isinstance(text, str):
        raise ValidationError(f"the chat template rendered {type(text).__name__}, not text")
    return text


def encode_chat_prompt(tokenizer: ChatTokenizer, text: str) -> list[int]:
    """Token ids of a rendered chat prompt (no special tokens added: the template wrote those it wants)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _content_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise ValidationError(f"`messages[{index}].content` has a part of type {part.type!r}; only "
                                  "{\"type\": \"text\", \"text\": ...} parts are supported (this is a text-only "
                                  "model server)")
        texts.append(part.text)
    return "".join(texts)
