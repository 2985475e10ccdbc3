"""Pure parts of constrained decoding: grammar building and checking, response_format mapping, the tool plan and
the tool-call stream (deltas streamed piece by piece add up to the whole), and validation's grammar rules."""
from __future__ import annotations

import json
from typing import Any

import pytest
from grammar_cases import ADD_TOOL, PERSON, TOOLS

from textgen_server.grammar.compile import (GrammarCompiler, GrammarError, build_grammar, build_ll_tokenizer,
                                           hf_tokenizer_json)
from textgen_server.grammar.tools import (NO_TOOL, NO_TOOL_TOOL, ToolError, ToolStream, build_tool_plan,
                                          chosen_function, merge_deltas)
from textgen_server.router.grammar_routes import response_format_grammar
from textgen_server.router.schemas import GenerateParameters
from textgen_server.router.validation import Limits, ValidationError, validate
from textgen_server.testing.tiny_models import build_tiny_tokenizer

LIMITS = Limits(max_input_tokens=100, max_total_tokens=200, max_stop_sequences=4, max_top_n_tokens=5,
                kv_capacity_tokens=10_000)


@pytest.fixture(scope="module")
def compiler() -> GrammarCompiler:
    tokenizer = build_tiny_tokenizer()
    return GrammarCompiler(build_ll_tokenizer(hf_tokenizer_json(tokenizer), len(tokenizer), [tokenizer.eos_token_id]))


@pytest.mark.parametrize(("grammar", "fragment"), [
    ("json", "must be an object"),
    ({"type": "regex", "value": 5}, "regex must be a non-empty string"),
    ({"type": "json", "value": [1]}, "must be a JSON object"),
    ({"type": "json"}, 'needs a "value"'),
    ({"type": "json_schema", "value": {"name": "x"}}, '"schema"'),
    ({"type": "regex", "value": "a" * 70_000}, "over this server's limit of 65536 bytes"),
])
def test_malformed_grammars_are_refused_before_compiling(grammar: Any, fragment: str) -> None:
    with pytest.raises(GrammarError, match=None) as raised:
        build_grammar(grammar)
    assert fragment in str(raised.value)


def test_compiler_accepts_schemas_and_caches_errors(compiler: GrammarCompiler) -> None:
    text = compiler.compile({"type": "json", "value": json.dumps(PERSON)})  # a string holding JSON, as TGI allows
    assert compiler.compile({"type": "json_schema", "value": {"name": "p", "schema": PERSON}}) == text
    for _ in range(2):
        with pytest.raises(GrammarError, match="unclosed group"):
            compiler.compile({"type": "regex", "value": "(a"})


@pytest.mark.parametrize(("response_format", "expected"), [
    (None, None), ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json", "value": {"type": "object"}}),
    ({"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}},
     {"type": "json", "value": PERSON}),
    ({"type": "json_schema", "value": {"name": "p", "schema": PERSON}}, {"type": "json", "value": PERSON}),
    ({"type": "regex", "value": "a+"}, {"type": "regex", "value": "a+"}),
])
def test_response_format_maps_to_tgi_grammars(response_format: Any, expected: Any) -> None:
    assert response_format_grammar(response_format) == expected


@pytest.mark.parametrize(("response_format", "fragment"), [
    ({"type": "json_schema"}, 'needs "json_schema"'),
    ({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}, "strict` must be a boolean"),
    ({"type": "yaml"}, "type 'yaml' is not supported"),
])
def test_bad_response_formats_are_refused(response_format: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as raised:
        response_format_grammar(response_format)
    assert fragment in str(raised.value)


def test_tool_plans_follow_tool_choice() -> None:
    auto = build_tool_plan(TOOLS, None)
    assert auto is not None and auto.allows_text
    names = [call["properties"]["name"]["const"] for call in auto.grammar["value"]["anyOf"]]
    assert names == ["get_weather", "add", NO_TOOL]
    # As TGI: no_tool has no parameters, and the prompt shows it with TGI's description after the user's tools.
    assert auto.grammar["value"]["anyOf"][2]["properties"]["parameters"]["properties"] == {}
    assert auto.tools == [*TOOLS, NO_TOOL_TOOL]
    assert NO_TOOL_TOOL["function"]["description"] == "Open ended response with no specific tool selected"
    required = build_tool_plan(TOOLS, "required")
    assert required is not None and len(required.grammar["value"]["anyOf"]) == 2
    named = build_tool_plan(TOOLS, {"type": "function", "function": {"name": "add"}})
    assert named is not None and named.tools == [ADD_TOOL]
    assert named.grammar["value"]["properties"]["parameters"] == ADD_TOOL["function"]["parameters"]
    assert build_tool_plan(TOOLS, "none") is None and build_tool_plan(None, "auto") is None


@pytest.mark.parametrize(("tools", "choice", "fragment"), [
    (None, "required", "needs `tools`"),
    (TOOLS, {"type": "function", "function": {"name": "x"}}, "'x', which is not in `tools`"),
    (TOOLS, 17, "`tool_choice` must be"),
    ([ADD_TOOL, ADD_TOOL], "auto", "duplicate function names ['add']"),
    ([{"type": "retrieval"}], "auto", "only functions are supported"),
    ([{"type": "function", "function": {"name": "no tool"}}], "auto", "must be 1-64 characters"),
])
def test_tool_requests_that_cannot_be_honoured(tools: Any, choice: Any, fragment: str) -> None:
    with pytest.raises(ToolError) as raised:
        build_tool_plan(tools, choice)
    assert fragment in str(raised.value)


def _stream(text: str, pieces: int, complete: bool) -> tuple[list[dict[str, Any]], bool]:
    stream, deltas = ToolStream("call_1"), []
    size = max(1, len(text) // pieces)
    for start in range(0, len(text), size):
        deltas += stream.push(text[start:start + size])
    last, called = stream.finish("", complete)
    return deltas + last, called


@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_tool_stream_pieces_add_up_to_the_call(pieces: int) -> None:
    text = '{"name":"add","parameters":{"a":3,"b":{"c":"}"}}}'
    deltas, called = _stream(text, pieces, complete=True)
    content, calls = merge_deltas(deltas)
    assert called and content is None
    assert calls == [{"id": "call_1", "type": "function", "function": {"name": "add",
                                                                       "arguments": '{"a":3,"b":{"c":"}"}}'}}]


def test_the_chosen_function_is_known_at_the_closing_quote_and_a_cut_call_keeps_its_text() -> None:
    assert [chosen_function(t) for t in ['{"na', '{"name":"no_tool', '{"name":"no_tool"', '{"name":"add",']] == [
        None, None, NO_TOOL, "add"]
    assert chosen_function('{"name":"no_tool_x"') == "no_tool_x"   # a user function may start like no_tool
    deltas, called = _stream('{"name":"add","parameters":{"a":3', 2, complete=False)
    assert not called and merge_deltas(deltas)[1] == [{"id": "call_1", "type": "function",
                                                       "function": {"name": "add", "arguments": '{"a":3'}}]


def test_validation_grammar_rules(compiler: GrammarCompiler) -> None:
    class Service:
        compile = staticmethod(compiler.compile)

    limits = Limits(**{**LIMITS.__dict__, "grammar": Service()})  # type: ignore[arg-type]
    valid = validate(GenerateParameters(grammar={"type": "regex", "value": "a+"}), [1, 2], limits)
    assert valid.params.grammar and validate(GenerateParameters(), [1, 2], limits).params.grammar == ""
    with pytest.raises(ValidationError, match="--disable-grammar-support"):
        validate(GenerateParameters(grammar={"type": "regex", "value": "a+"}), [1, 2], LIMITS)
    with pytest.raises(ValidationError, match="ignoring EOS"):
        validate(GenerateParameters(grammar={"type": "regex", "value": "a+"}, ignore_eos_token=True), [1, 2], limits)
    with pytest.raises(ValidationError, match="`grammar`: the grammar is not valid"):
        validate(GenerateParameters(grammar={"type": "regex", "value": "(a"}), [1, 2], limits)
