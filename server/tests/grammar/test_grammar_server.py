"""Constrained decoding through the real launcher (random-weight llama, temperature 1, seeded): TGI's `grammar`,
OpenAI's `response_format` and tools, mixed with free requests, and the 422s for grammars that cannot be used."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest
from grammar_cases import ORDER, PERSON, REGEXES, SCHEMAS, TOOLS
from server_testlib import Launch, LauncherProcess

pytestmark = pytest.mark.slow
MAX_NEW = 150


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "900", "--max-total-tokens", "1024")


@pytest.fixture(scope="module")
def client(server: LauncherProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", timeout=300, max_retries=0)


def generate(server: LauncherProcess, parameters: dict[str, Any], inputs: str = "The quick brown fox") -> Any:
    response = httpx.post(f"{server.base_url}/generate", timeout=300,
                          json={"inputs": inputs, "parameters": {"details": True, **parameters}})
    return response


def free_parameters(i: int) -> dict[str, Any]:
    return {"do_sample": True, "seed": 500 + i, "max_new_tokens": 32}


def check_output(grammar: dict[str, Any], text: str) -> None:
    if grammar["type"] == "json":
        assert jsonschema_rs.validator_for(grammar["value"]).is_valid(json.loads(text)), text
    else:
        assert re.fullmatch(grammar["value"], text), (grammar["value"], text)


def test_constrained_outputs_validate_and_free_outputs_stay_identical(server: LauncherProcess) -> None:
    with ThreadPoolExecutor(4) as pool:
        alone = [r.json()["generated_text"] for r in pool.map(lambda i: generate(server, free_parameters(i)), range(4))]
    grammars = [{"type": "json", "value": s} for s in SCHEMAS.values()] + [{"type": "regex", "value": rx}
                                                                           for rx in REGEXES]
    jobs: list[tuple[str, dict[str, Any], Any]] = [("free", free_parameters(i), i) for i in range(4)]
    jobs += [("grammar", {"do_sample": True, "seed": s, "max_new_tokens": MAX_NEW, "grammar": g}, g)
             for s in range(3) for g in grammars]
    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda job: generate(server, job[1]), jobs))
    completed = 0
    for (kind, _, extra), response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        body = response.json()
        if kind == "free":
            assert body["generated_text"] == alone[extra]
        elif body["details"]["finish_reason"] == "eos_token":
            completed += 1
            check_output(extra, body["generated_text"])
    assert completed >= (len(jobs) - 4) * 2 // 3, f"{completed} of {len(jobs) - 4} constrained requests finished"


def test_grammar_with_best_of_stop_and_logprobs(server: LauncherProcess) -> None:
    grammar = {"type": "json", "value": ORDER}
    body = generate(server, {"best_of": 2, "do_sample": True, "max_new_tokens": MAX_NEW, "grammar": grammar,
                             "top_n_tokens": 3}).json()
    if body["details"]["finish_reason"] == "eos_token":
        check_output(grammar, body["generated_text"])
    assert len(body["details"]["best_of_sequences"]) == 1
    tokens = body["details"]["tokens"]
    assert all(t["logprob"] is not None and t["logprob"] <= 0 for t in tokens)
    stopped = generate(server, {"do_sample": True, "seed": 1, "max_new_tokens": MAX_NEW, "stop": ['"items"'],
                                "grammar": grammar}).json()
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    assert stopped["generated_text"].startswith('{"items"')  # as TGI, the text keeps the token holding the stop


@pytest.mark.parametrize(("grammar", "fragment"), [
    ({"type": "regex", "value": "a(b"}, "unclosed group"),
    ({"type": "json", "value": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}},
     'Unimplemented keys: ["not"]'),
    ({"type": "json", "value": {"enum": [f"value-{i}-" + "x" * 40 for i in range(2000)]}}, "over this server's limit"),
    ({"type": "json", "value": '{"type": "object"'}, "not valid JSON"),
    ({"type": "xml", "value": "<a/>"}, "type 'xml' is not supported"),
    ({"type": "json", "value": {"type": "strin"}}, "Invalid type: strin"),
])
def test_unusable_grammars_are_422_with_the_reason(server: LauncherProcess, grammar: dict[str, Any],
                                                   fragment: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(generate, server, free_parameters(0))
        response = generate(server, {"grammar": grammar})
        assert response.status_code == 422 and fragment in response.json()["error"], response.text
        assert response.json()["error_type"] == "validation"
        assert running.result().status_code == 200  # nothing else disturbed


def test_response_format_json_schema_and_json_object(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Describe a person"}]
    for seed in range(3):
        response = client.chat.completions.create(
            model="tgi", messages=messages, seed=seed, max_tokens=MAX_NEW, temperature=1.0,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                                    "strict": True}})
        choice = response.choices[0]
        if choice.finish_reason == "stop":
            assert jsonschema_rs.validator_for(PERSON).is_valid(json.loads(choice.message.content or ""))
    response = client.chat.completions.create(model="tgi", messages=messages, seed=4, max_tokens=MAX_NEW,
                                              response_format={"type": "json_object"})
    if response.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(response.choices[0].message.content or ""), dict)


def _streamed_call(client: openai.OpenAI, **kwargs: Any) -> tuple[str | None, str, str, str | None]:
    name, arguments, content, reason = None, "", "", None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name if call.function and call.function.name else name
                arguments += call.function.arguments or "" if call.function else ""
            content += choice.delta.content or ""
            reason = choice.finish_reason or reason
    return name, arguments, content, reason


@pytest.mark.parametrize("tool_choice", ["required", "auto", {"type": "function", "function": {"name": "add"}}])
def test_tool_calls_parse_validate_and_stream_the_same(client: openai.OpenAI, tool_choice: Any) -> None:
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
    for seed in range(2):
        kwargs = {"model": "tgi", "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                  "tools": TOOLS, "tool_choice": tool_choice, "seed": seed, "max_tokens": 100}
        choice = client.chat.completions.create(**kwargs).choices[0]
        name, arguments, content, reason = _streamed_call(client, **kwargs)
        assert reason == choice.finish_reason
        if choice.message.tool_calls:
            call = choice.message.tool_calls[0].function
            assert (call.name, call.arguments) == (name, arguments)
            if choice.finish_reason == "tool_calls":
                assert jsonschema_rs.validator_for(schemas[call.name]).is_valid(json.loads(call.arguments))
            if isinstance(tool_choice, dict):
                assert call.name == "add"
        else:
            assert tool_choice == "auto" and choice.message.content == content


def test_tool_choice_without_tools_and_mixed_with_response_format_are_422(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    for kwargs, fragment in [({"tool_choice": "required"}, "`tool_choice` 'required' needs `tools`"),
                             ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
                              "'nope', which is not in `tools`"),
                             ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "mutually exclusive")]:
        with pytest.raises(openai.UnprocessableEntityError) as raised:
            client.chat.completions.create(model="tgi", messages=messages, **kwargs)
        assert fragment in str(raised.value.body)
    # "none" and "auto" without tools ask for what happens anyway: answered.
    assert client.chat.completions.create(model="tgi", messages=messages, tool_choice="none", max_tokens=4).choices


def test_disable_grammar_support_refuses_grammar_and_tools(tiny_llama_dir: Path, launch_for_module: Launch) -> None:
    server = launch_for_module(tiny_llama_dir, "--disable-grammar-support")
    response = generate(server, {"grammar": {"type": "regex", "value": "a+"}})
    assert response.status_code == 422 and "--disable-grammar-support" in response.json()["error"]
    response = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS})
    assert response.status_code == 422 and "--disable-grammar-support" in response.json()["error"]
