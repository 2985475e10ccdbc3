"""`tools`, `tool_choice` and `response_format` of /v1/chat/completions -> the grammar a chat request runs.

Tools and `response_format` are mutually exclusive (as in TGI). The tools go into the prompt as TGI puts them: the
chat template gets them as its `tools` variable when it has one, and the last message gets TGI's tool prompt
(plus the tools as JSON when the template cannot show them).
"""
from __future__ import annotations

import json
import re
from typing import Any

from textgen_server.grammar.tools import ToolError, ToolPlan, build_tool_plan
from textgen_server.router.validation import ValidationError

# TGI's default `tool_prompt`, so a model sees the same instruction as under TGI.
DEFAULT_TOOL_PROMPT = ("\nGiven the functions available, please respond with a JSON for a function call with its "
                       "proper arguments that best answers the given prompt. Respond in the format {name: function "
                       "name, parameters: dictionary of argument name and its value}.Do not use variables.\n")
_TOOLS_VARIABLE = re.compile(r"\btools\b")


def chat_tool_plan(body: Any) -> ToolPlan | None:
    """The tool plan of a ChatCompletionRequest (None: no tool may be called); ValidationError when refused."""
    for legacy, current in (("functions", "tools"), ("function_call", "tool_choice")):
        if getattr(body, legacy, None) is not None:
            raise ValidationError(f"`{legacy}` is OpenAI's deprecated form and is not supported; send `{current}` "
                                  'instead (tools=[{"type": "function", "function": {"name", "parameters"}}])')
    if body.tool_prompt and not body.tools:  # it is the instruction shown after the tools
        raise ValidationError("`tool_prompt` needs `tools`: it is appended after the tools shown to the model; "
                              "send `tools` or drop `tool_prompt`")
    try:
        plan = build_tool_plan(body.tools, body.tool_choice)
    except ToolError as error:
        raise ValidationError(str(error)) from None
    if plan is not None and body.response_format is not None and body.response_format.get("type") != "text":
        raise ValidationError("`tools` and `response_format` are mutually exclusive: send one of them")
    return plan


def with_tools(conversation: list[dict[str, Any]], plan: ToolPlan, tool_prompt: str | None,
               chat_template: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Template messages and extra template variables that show the plan's tools to the model."""
    prompt = tool_prompt or DEFAULT_TOOL_PROMPT
    if _TOOLS_VARIABLE.search(chat_template):
        suffix, extra = f"\n---\n{prompt}", {"tools": plan.tools}
    else:
        suffix, extra = f"\n---\n{json.dumps(plan.tools)}\n{prompt}", {}
    messages = [dict(message) for message in conversation]
    messages[-1]["content"] = f"{messages[-1].get('content') or ''}{suffix}"
    return messages, extra
