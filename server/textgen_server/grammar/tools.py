"""OpenAI function calling on top of constrained decoding (pure functions, torch-free).

The model is constrained to emit one call as compact JSON, `{"name":"<function>","parameters":{...}}`, with
`parameters` following that function's JSON Schema (TGI's default tool prompt asks for this very shape). The
grammar is an anyOf over the callable functions; with `tool_choice: "auto"` it also offers TGI's pseudo-function
`no_tool` ("Open ended response with no specific tool selected", no parameters), shown to the model among the
tools as TGI does. A choice whose call names `no_tool` is answered as TGI answers it: the router drops that
generation as soon as `chosen_function` sees the name and generates again without tools and without a grammar
(router/openai_no_tool.py). `ToolStream` turns a real call's text into OpenAI's `tool_calls` deltas; the
non-streamed answer is built from the same deltas, so both agree by construction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

NO_TOOL = "no_tool"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")   # OpenAI's rule for function names
CALL_PREFIX = re.compile(r'^\{"name":"([A-Za-z0-9_-]{1,64})","parameters":')
# The name is decided at its closing quote (names cannot contain one), before `,"parameters":` is generated.
NAME_PREFIX = re.compile(r'^\{"name":"([A-Za-z0-9_-]{1,64})"')
EMPTY_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
# TGI's pseudo-function for tool_choice "auto" (router/src/infer/tool_grammar.rs), as the prompt shows it.
NO_TOOL_TOOL = {"type": "function", "function": {
    "name": NO_TOOL, "description": "Open ended response with no specific tool selected",
    "parameters": {"type": "object"}}}


class ToolError(ValueError):
    """`tools` / `tool_choice` cannot be honoured; answered 422 with the reason."""


@dataclass(frozen=True)
class ToolPlan:
    """What a chat request with tools runs: the tools shown to the model and the grammar of its answer."""

    tools: list[dict[str, Any]]              # OpenAI tool objects offered in the prompt (with no_tool for auto)
    grammar: dict[str, Any]                  # TGI grammar object ({"type": "json", "value": schema})
    allows_text: bool                        # tool_choice "auto": the model may answer without a call


def build_tool_plan(tools: list[Any] | None, tool_choice: Any) -> ToolPlan | None:
    """None when no tool may be called (no tools, or tool_choice "none"); ToolError for what cannot be honoured."""
    functions = [_function_of(tool, index) for index, tool in enumerate(tools or [])]
    names = [function["name"] for function in functions]
    if len(set(names)) != len(names):
        raise ToolError(f"`tools` has duplicate function names {sorted({n for n in names if names.count(n) > 1})}")
    choice = "auto" if tool_choice is None else tool_choice
    if not functions:
        if choice not in ("none", "auto"):
            raise ToolError(f"`tool_choice` {choice!r} needs `tools`: send the functions the model may call, or "
                            "drop `tool_choice`")
        return None
    if choice == "none":
        return None
    if choice == "auto":
        return _plan(tools or [], functions, allows_text=True)
    if choice == "required":
        return _plan(tools or [], functions, allows_text=False)
    wanted = _named_choice(choice)
    if wanted not in names:
        raise ToolError(f"`tool_choice` names the function {wanted!r}, which is not in `tools` ({names})")
    index = names.index(wanted)
    return _plan([(tools or [])[index]], [functions[index]], allows_text=False)


def _plan(tools: list[Any], functions: list[dict[str, Any]], allows_text: bool) -> ToolPlan:
    calls = [_call_schema(f["name"], f.get("parameters") or EMPTY_PARAMETERS) for f in functions]
    shown = list(tools)
    if allows_text:
        calls.append(_call_schema(NO_TOOL, EMPTY_PARAMETERS))
        shown.append(NO_TOOL_TOOL)
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return ToolPlan(tools=shown, grammar={"type": "json", "value": schema}, allows_text=allows_text)


def chosen_function(text: str) -> str | None:
    """The function a call's generated text names, once its name is complete (None before)."""
    match = NAME_PREFIX.match(text)
    return match.group(1) if match else None


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": name}, "parameters": parameters},
            "required": ["name", "parameters"], "additionalProperties": False}


def _function_of(tool: Any, index: int) -> dict[str, Any]:
    where = f"`tools[{index}]`"
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise ToolError(f'{where} must be {{"type": "function", "function": {{...}}}}; only functions are supported')
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ToolError(f"{where}.function needs a `name`")
    if not NAME_PATTERN.match(function["name"]) or function["name"] == NO_TOOL:
        raise ToolError(f"{where}.function.name {function['name']!r} must be 1-64 characters of a-z, A-Z, 0-9, "
                        f"_ and - (and not {NO_TOOL!r}, which stands for a text answer)")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ToolError(f"{where}.function.parameters must be a JSON Schema object, got {parameters!r}")
    return function


def _named_choice(choice: Any) -> str:
    if isinstance(choice, str):  # TGI's extension: any other string names a function
        return choice
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str):
            return name
    raise ToolError(f'`tool_choice` must be "none", "auto", "required", a function name or {{"type": "function", '
                    f'"function": {{"name": ...}}}}, got {choice!r}')


@dataclass
class ToolStream:
    """Turns one choice's generated call into OpenAI `tool_calls` deltas (a `no_tool` choice never gets here: the
    router answers it without tools).

    The call's `arguments` is the exact text the model generated for `parameters`; its final "}" (which closes
    the call object) is held back until the end decides whether the call was complete."""

    call_id: str
    buffer: str = ""
    name: str | None = None
    sent: int = 0                                        # characters of the arguments text already sent
    deltas: list[dict[str, Any]] = field(default_factory=list)

    def push(self, piece: str) -> list[dict[str, Any]]:
        """Deltas that are safe to send after `piece`."""
        self.buffer += piece
        out: list[dict[str, Any]] = []
        if self.name is None:
            match = CALL_PREFIX.match(self.buffer)
            if match is None:
                return out
            self.name = match.group(1)
            self.buffer = self.buffer[match.end():]
            out.append(self._call_delta({"name": self.name, "arguments": ""}, with_header=True))
        if len(self.buffer) - 1 > self.sent:
            out.append(self._call_delta({"arguments": self.buffer[self.sent:-1]}))
            self.sent = len(self.buffer) - 1
        return out

    def finish(self, piece: str, complete: bool) -> tuple[list[dict[str, Any]], bool]:
        """The last deltas, and whether a function was called (finish_reason "tool_calls")."""
        out = self.push(piece)
        if self.name is None:   # cut before the name was known: nothing but the raw text to show
            out.append({"content": self.buffer})
            return out, False
        rest = self.buffer[self.sent:]
        if complete and rest.endswith("}"):
            rest = rest[:-1]
        if rest:
            out.append(self._call_delta({"arguments": rest}))
        return out, complete

    def _call_delta(self, function: dict[str, Any], with_header: bool = False) -> dict[str, Any]:
        call: dict[str, Any] = {"index": 0}
        if with_header:
            call.update({"id": self.call_id, "type": "function"})
        call["function"] = function
        return {"tool_calls": [call]}


def merge_deltas(deltas: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]] | None]:
    """The message content and tool_calls the deltas of one choice add up to (the non-streamed answer)."""
    content_parts = [d["content"] for d in deltas if "content" in d]
    calls: list[dict[str, Any]] = []
    for delta in deltas:
        for call in delta.get("tool_calls", []):
            if "id" in call:
                calls.append({"id": call["id"], "type": "function",
                              "function": {"name": call["function"]["name"], "arguments": ""}})
            calls[-1]["function"]["arguments"] += call["function"].get("arguments", "")
    return ("".join(content_parts) if content_parts else None), (calls or None)
