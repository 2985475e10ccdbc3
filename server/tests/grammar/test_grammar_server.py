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


# A one-function tool set on which this random model picks TGI's no_tool for some seeds and calls `q` for others
# (seed 0, n=4: choices 0-1 call q, 2-3 pick no_tool; found by trying names and seeds; the outputs are seeded).
Q_TOOL = {"type": "function", "function": {"name": "q", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _stream_by_choice(client: openai.OpenAI, **kwargs: Any) -> tuple[dict[int, dict[str, Any]], Any]:
    """Per choice: content pieces (one per chunk that carries content), call name and arguments, finish_reason."""
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            seen = choices.setdefault(choice.index, {"pieces": [], "name": None, "arguments": "", "reason": None})
            if choice.delta.content:
                seen["pieces"].append(choice.delta.content)
            for call in choice.delta.tool_calls or []:
                seen["name"] = call.function.name or seen["name"] if call.function else seen["name"]
                seen["arguments"] += call.function.arguments or "" if call.function else ""
            seen["reason"] = choice.finish_reason or seen["reason"]
    return choices, usage


def test_no_tool_answers_as_a_request_without_tools(server: LauncherProcess, client: openai.OpenAI) -> None:
    """As TGI: a choice that picks no_tool is generated again without tools or grammar (same seed), its text
    streamed token by token; finish_reason and usage are those of that generation; calls in the same request
    are unaffected."""
    failures_before = _no_tool_failures(server)
    kwargs: dict[str, Any] = {"model": "tgi", "messages": ASK, "seed": 0, "n": 4, "max_tokens": 30}
    with_tools = client.chat.completions.create(tools=[Q_TOOL], tool_choice="auto", **kwargs)
    plain = client.chat.completions.create(**kwargs)
    streamed, streamed_usage = _stream_by_choice(client, tools=[Q_TOOL], tool_choice="auto", **kwargs)
    no_tool = [c.index for c in with_tools.choices if not c.message.tool_calls]
    assert no_tool and len(no_tool) < 4, "the seeds no longer mix calls and no_tool: pick other seeds"
    for choice in with_tools.choices:
        seen = streamed[choice.index]
        assert seen["reason"] == choice.finish_reason
        if choice.index in no_tool:
            expected = plain.choices[choice.index]
            assert (choice.message.content, choice.finish_reason) == (expected.message.content,
                                                                        expected.finish_reason)
            assert "".join(seen["pieces"]) == choice.message.content and seen["name"] is None
            assert len(seen["pieces"]) > 5, seen["pieces"]   # token by token, not one piece
        else:
            call = (choice.message.tool_calls or [])[0].function
            assert (call.name, call.arguments) == (seen["name"], seen["arguments"]) and call.name == "q"
            assert choice.message.content is None and not seen["pieces"]
    # Usage counts each prompt the answer came from once (mixed: the tool prompt and the plain one) and the
    # tokens of the answers (not of the dropped no_tool calls).
    tool_prompt = post_json(server, "/chat_tokenize", {"messages": ASK, "tools": [Q_TOOL]})["tokenize_response"]
    assert with_tools.usage is not None and plain.usage is not None
    assert with_tools.usage.prompt_tokens == plain.usage.prompt_tokens + len(tool_prompt)
    assert streamed_usage is not None and streamed_usage.model_dump() == with_tools.usage.model_dump()
    alone = {"model": "tgi", "messages": ASK, "seed": no_tool[0], "max_tokens": 30}
    one = client.chat.completions.create(tools=[Q_TOOL], **alone)   # tool_choice defaults to auto with tools
    assert one.usage == client.chat.completions.create(**alone).usage
    # Each dropped call is one request ended with err="no_tool" (so count = success + failures still holds).
    assert _no_tool_failures(server) == failures_before + 2 * len(no_tool) + 1


def test_no_tool_through_inference_client(server: LauncherProcess) -> None:
    from huggingface_hub import InferenceClient

    hub = InferenceClient(base_url=server.base_url, timeout=300)
    kwargs: dict[str, Any] = {"messages": ASK, "seed": 2, "max_tokens": 30}
    expected = hub.chat_completion(**kwargs).choices[0]
    answer = hub.chat_completion(tools=[Q_TOOL], tool_choice="auto", **kwargs).choices[0]
    assert answer.message.tool_calls is None and answer.message.content == expected.message.content
    assert answer.finish_reason == expected.finish_reason
    pieces = [c.choices[0].delta.content for c in hub.chat_completion(tools=[Q_TOOL], tool_choice="auto",
                                                                       stream=True, **kwargs)
              if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == expected.message.content and len(pieces) > 5


def post_json(server: LauncherProcess, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{server.base_url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _no_tool_failures(server: LauncherProcess) -> float:
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    found = re.search(r'^tgi_request_failure\{err="no_tool"\} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
