"""TGI's compatibility routes through the clients people use, unmodified, against the real launcher: TGI's own
`text-generation` package (Client, AsyncClient: POST / answered as a one-element list), huggingface_hub's
InferenceClient (text_generation), the openai SDK (on /invocations), and TGI's documented request bodies for
POST /, /invocations, /vertex and /chat_tokenize. Each answer is compared with the route it stands for."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import text_generation
from huggingface_hub import InferenceClient
from openai.types import Completion
from openai.types.chat import ChatCompletion
from server_testlib import Launch, LauncherProcess, ReferenceModels

pytestmark = pytest.mark.slow

# TGI's README and client README examples.
PROMPT = "What is Deep Learning?"
MESSAGES = [{"role": "user", "content": "What is Deep Learning?"}]


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "300", "--max-total-tokens", "512")


def post(server: LauncherProcess, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def generate(server: LauncherProcess, inputs: str, **parameters: Any) -> dict[str, Any]:
    response = post(server, "/generate", {"inputs": inputs, "parameters": {"details": True, **parameters}})
    assert response.status_code == 200, response.text
    return response.json()


def ids(details: Any) -> list[int]:
    return [token["id"] if isinstance(token, dict) else token.id for token in details]


def test_tgi_client_generate_stream_and_async_answer_as_generate(server: LauncherProcess) -> None:
    client = text_generation.Client(server.base_url, timeout=120)
    expected = generate(server, PROMPT, max_new_tokens=20)
    answer = client.generate(PROMPT, max_new_tokens=20)  # POST /, parsed as payload[0]
    assert answer.generated_text == expected["generated_text"]
    assert ids(answer.details.tokens) == ids(expected["details"]["tokens"])
    assert answer.details.finish_reason.value == expected["details"]["finish_reason"]
    text, streamed = "", []
    for response in client.generate_stream(PROMPT, max_new_tokens=20):  # the client README's loop
        streamed.append(response.token.id)
        if not response.token.special:
            text += response.token.text
    assert streamed == ids(expected["details"]["tokens"]) and text == expected["generated_text"]
    async_client = text_generation.AsyncClient(server.base_url, timeout=120)
    assert asyncio.run(async_client.generate(PROMPT, max_new_tokens=20)).generated_text == expected["generated_text"]


def test_tgi_client_sampling_best_of_and_watermark_reach_the_server(server: LauncherProcess) -> None:
    client = text_generation.Client(server.base_url, timeout=120)
    for watermark in (False, True):
        expected = generate(server, PROMPT, max_new_tokens=12, do_sample=True, seed=7, watermark=watermark)
        answer = client.generate(PROMPT, max_new_tokens=12, do_sample=True, seed=7, watermark=watermark)
        assert ids(answer.details.tokens) == ids(expected["details"]["tokens"])
    best = client.generate(PROMPT, max_new_tokens=6, do_sample=True, best_of=2)
    assert best.details.best_of_sequences is not None and len(best.details.best_of_sequences) == 1


def test_tgi_client_raises_its_own_errors_with_the_servers_message(server: LauncherProcess) -> None:
    client = text_generation.Client(server.base_url, timeout=120)
    with pytest.raises(text_generation.errors.ValidationError, match="--max-total-tokens"):
        client.generate(PROMPT, max_new_tokens=5000)
    with pytest.raises(text_generation.errors.ValidationError, match="--max-total-tokens"):
        list(client.generate_stream(PROMPT, max_new_tokens=5000))


def test_post_root_is_a_one_element_list_with_full_text_by_default(server: LauncherProcess) -> None:
    expected = generate(server, PROMPT, max_new_tokens=8)
    answer = post(server, "/", {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}).json()
    # As TGI for a text-generation model: return_full_text defaults to true on the compat route.
    assert answer == [{"generated_text": PROMPT + expected["generated_text"]}]
    without = post(server, "/", {"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "return_full_text": False}})
    assert without.json() == [{"generated_text": expected["generated_text"]}]
    error = post(server, "/", {"inputs": PROMPT, "parameters": {"max_new_tokens": 5000}})
    assert error.status_code == 422 and error.json()["error_type"] == "validation"  # an object, not a list


def test_inference_client_text_generation(server: LauncherProcess) -> None:
    client = InferenceClient(base_url=server.base_url, timeout=120)
    expected = generate(server, PROMPT, max_new_tokens=10, do_sample=True, seed=3, watermark=True)
    output = client.text_generation(PROMPT, max_new_tokens=10, details=True, do_sample=True, seed=3, watermark=True)
    # The client sends no return_full_text unless asked: POST / then answers the full text, as TGI does.
    assert output.generated_text == PROMPT + expected["generated_text"]
    assert ids(output.details.tokens) == ids(expected["details"]["tokens"])
    text = client.text_generation(PROMPT, max_new_tokens=10, do_sample=True, seed=3, watermark=True,
                                  return_full_text=False)
    assert text == expected["generated_text"]


def test_invocations_answers_tgi_chat_and_completion_bodies(server: LauncherProcess) -> None:
    tgi = post(server, "/invocations", {"inputs": PROMPT, "parameters": {"max_new_tokens": 8,
                                                                          "return_full_text": False}})
    assert tgi.json() == [{"generated_text": generate(server, PROMPT, max_new_tokens=8)["generated_text"]}]
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", timeout=120, max_retries=0)
    chat_body = {"messages": MESSAGES, "max_tokens": 10, "temperature": 0}
    chat = client.post("/invocations", cast_to=ChatCompletion, body=chat_body)
    direct = client.post("/v1/chat/completions", cast_to=ChatCompletion, body=chat_body)
    assert chat.choices[0].message.content == direct.choices[0].message.content and chat.usage == direct.usage
    completion_body = {"prompt": PROMPT, "max_tokens": 10, "temperature": 0}
    completion = client.post("/invocations", cast_to=Completion, body=completion_body)
    direct_completion = client.post("/v1/completions", cast_to=Completion, body=completion_body)
    assert completion.choices[0].text == direct_completion.choices[0].text
    streamed = post(server, "/invocations", {**chat_body, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream") and "data: [DONE]" in streamed.text
    neither = post(server, "/invocations", {"text": PROMPT})
    assert neither.status_code == 422 and "`inputs`" in neither.json()["error"]


def test_vertex_predictions_are_the_generated_texts_of_each_instance(server: LauncherProcess) -> None:
    chat = post(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 10, "temperature": 0}).json()
    body = {"instances": [{"inputs": PROMPT, "parameters": {"max_new_tokens": 10, "seed": 42}},
                          {"messages": MESSAGES, "max_tokens": 10, "temperature": 0},
                          {"inputs": PROMPT, "parameters": {"max_new_tokens": 10, "do_sample": False}}]}
    answer = post(server, "/vertex", body)
    assert answer.status_code == 200, answer.text
    # As TGI, a generation instance samples unless it says otherwise; every given parameter applies.
    assert answer.json() == {"predictions": [
        generate(server, PROMPT, max_new_tokens=10, seed=42, do_sample=True)["generated_text"],
        chat["choices"][0]["message"]["content"],
        generate(server, PROMPT, max_new_tokens=10)["generated_text"]]}


@pytest.mark.parametrize(("body", "fragment"), [
    ({"instances": []}, "`instances` is empty"),
    ({"instances": [{"inputs": PROMPT}, {"inputs": PROMPT, "parameters": {"max_new_tokens": 5000}}]},
     "instances[1]: Input validation error"),
    ({"instances": [{"messages": MESSAGES, "stream": True}]}, "remove `stream` and `n`"),
    ({"instances": [{"text": PROMPT}]}, "invalid request body"),
])
def test_vertex_errors_name_the_instance(server: LauncherProcess, body: dict[str, Any], fragment: str) -> None:
    answer = post(server, "/vertex", body)
    assert answer.status_code == 422 and fragment in answer.json()["error"], answer.text


def test_chat_tokenize_is_the_templated_prompt_of_chat_completions(server: LauncherProcess, tiny_llama_dir: Path,
                                                                   reference: ReferenceModels) -> None:
    tokenizer = reference.tokenizer(tiny_llama_dir)
    answer = post(server, "/chat_tokenize", {"messages": MESSAGES}).json()
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert answer["templated_text"] == text
    tokens = answer["tokenize_response"]
    assert [t["id"] for t in tokens] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert all(t["text"] == text[t["start"]:t["stop"]] for t in tokens)
    usage = post(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1}).json()["usage"]
    assert usage["prompt_tokens"] == len(tokens)
    bad = post(server, "/chat_tokenize", {"messages": []})
    assert bad.status_code == 422 and "at least one message" in bad.json()["error"]


def test_chat_tokenize_renders_the_tools_as_chat_completions_does(server: LauncherProcess, tiny_llama_dir: Path,
                                                                  reference: ReferenceModels) -> None:
    from textgen_server.router.chat import render_chat_prompt
    from textgen_server.router.openai_schemas import ChatCompletionRequest
    from textgen_server.router.openai_tools import chat_tool_plan

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools}
    answer = post(server, "/chat_tokenize", body).json()
    # The prompt /v1/chat/completions builds for the same request (openai_jobs.build_chat_job's two calls).
    request = ChatCompletionRequest.model_validate(body)
    tokenizer = reference.tokenizer(tiny_llama_dir)
    expected = render_chat_prompt(tokenizer, request.messages, chat_tool_plan(request), request.tool_prompt)
    assert answer["templated_text"] == expected and "get_weather" in expected
    assert [t["id"] for t in answer["tokenize_response"]] == tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_openapi_documents_the_compat_routes(server: LauncherProcess) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert schemas["VertexResponse"]["properties"]["predictions"]["items"] == {"type": "string"}
    root = paths["/"]["post"]["responses"]["200"]["content"]
    assert root["application/json"]["schema"]["type"] == "array" and "text/event-stream" in root
    invocations = paths["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in invocations] == ["GenerateRequest", "ChatCompletionRequest",
                                                                     "CompletionRequest"]
    assert all(ref["$ref"].rsplit("/", 1)[1] in schemas for ref in invocations)
    tokenize = paths["/chat_tokenize"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert tokenize["$ref"].endswith("/ChatTokenizeResponse") and json.dumps(schemas["ChatTokenizeResponse"])
