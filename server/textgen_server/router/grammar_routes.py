"""What the routes do for constrained decoding before their synchronous validation.

`prepare_grammar` compiles a request's grammar in a worker thread (cached), so that validation, which runs on
the event loop, only looks the result up. `chat_grammar` maps OpenAI's `response_format` onto TGI's grammar
object, or takes the call grammar of its tools (router/openai_tools.py, textgen_server/grammar/tools.py).
"""
from __future__ import annotations

from typing import Any

from textgen_server.router.app import RouterState
from textgen_server.router.openai_tools import chat_tool_plan
from textgen_server.router.validation import ValidationError


async def prepare_grammar(state: RouterState, grammar: Any) -> None:
    """Compile `grammar` off the loop when the server is serving with grammar support (else validation answers)."""
    serving = state.serving
    if grammar is not None and serving is not None and serving.limits.grammar is not None:
        await serving.limits.grammar.prepare(grammar)


def response_format_grammar(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's (and TGI's) `response_format` -> TGI's grammar object; None for text.

    `json_object`: any JSON object (TGI's alias with a "value" schema is honoured). `json_schema`: OpenAI's
    {"json_schema": {"name", "schema", "strict"}} or TGI's {"value": {"name", "schema"}}; the schema is always
    enforced exactly, so `strict` true and false both get output that validates. TGI's own `json` and `regex`
    types are accepted as well."""
    if response_format is None:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        value = response_format.get("value", {"type": "object"})
        return {"type": "json", "value": value}
    if kind == "json_schema":
        config = response_format.get("json_schema", response_format.get("value"))
        if not isinstance(config, dict) or "schema" not in config:
            raise ValidationError('`response_format` of type "json_schema" needs "json_schema": {"name": ..., '
                                  '"schema": {...}}')
        if "strict" in config and not isinstance(config["strict"], bool):
            raise ValidationError(f"`response_format.json_schema.strict` must be a boolean, got {config['strict']!r}")
        return {"type": "json", "value": config["schema"]}
    if kind in ("json", "regex"):
        return {"type": kind, "value": response_format.get("value")}
    raise ValidationError(f"`response_format` type {kind!r} is not supported: use \"text\", \"json_object\" or "
                          "\"json_schema\"")


def chat_grammar(body: Any) -> dict[str, Any] | None:
    """The grammar of a chat request (a ChatCompletionRequest): its tools' calls, else its `response_format`."""
    plan = chat_tool_plan(body)
    return plan.grammar if plan is not None else response_format_grammar(body.response_format)
