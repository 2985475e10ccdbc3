"""Real, unmodified clients against the real `textgen-launcher` on a tiny llama: the openai SDK
(`chat.completions.create` streaming and not, `completions.create`, `models.list`) and huggingface_hub's
InferenceClient (`text_generation` with details and with stream, `chat_completion` streaming and not).

Content is checked against transformers' own greedy `generate` on the chat template's token ids, and against
our /generate for plain prompts; finish reasons, token counts and usage against those references."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from server_testlib import Launch, LauncherProcess, ReferenceModels

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "The quick brown fox jumps over"}]
PROMPT = "The quick brown fox"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "300", "--max-total-tokens", "512")


@pytest.fixture(scope="module")
def client(server: LauncherProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def chat_reference(tiny_llama_dir: Path, reference: ReferenceModels) -> dict[str, Any]:
    """transformers' greedy continuation of the chat-templated prompt, as text, token count and finish reason."""
    tokenizer = reference.tokenizer(tiny_llama_dir)
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    output_ids = reference.greedy(tiny_llama_dir, prompt_ids, MAX_TOKENS)
    stopped = len(output_ids) < MAX_TOKENS
    return {"content": tokenizer.decode(output_ids, skip_special_tokens=True), "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(output_ids), "finish_reason": "stop" if stopped else "length"}


def tgi_generate(server: LauncherProcess, inputs: str, max_new_tokens: int) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/generate", timeout=120, json={
        "inputs": inputs, "parameters": {"max_new_tokens": max_new_tokens, "details": True}})
    assert response.status_code == 200, response.text
    return response.json()


def test_chat_completion_equals_transformers_greedy(client: openai.OpenAI, chat_reference: dict[str, Any],
                                                    tiny_llama_dir: Path) -> None:
    response = client.chat.completions.create(model="tgi", messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == chat_reference["content"]
    assert choice.finish_reason == chat_reference["finish_reason"]
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (
        chat_reference["prompt_tokens"], chat_reference["completion_tokens"])
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert response.model == str(tiny_llama_dir) and response.id.startswith("chatcmpl-")
    assert response.object == "chat.completion" and response.created > 0 and response.system_fingerprint


def test_streamed_chat_completion_has_the_same_text_and_a_usage_chunk(client: openai.OpenAI,
                                                                     chat_reference: dict[str, Any]) -> None:
    chunks = list(client.chat.completions.create(model="tgi", messages=MESSAGES, temperature=0,
                                                 max_tokens=MAX_TOKENS, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    with_choices = [chunk for chunk in chunks if chunk.choices]
    content = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert content == chat_reference["content"]
    reasons = [chunk.choices[0].finish_reason for chunk in with_choices]
    assert reasons[-1] == chat_reference["finish_reason"] and not any(reasons[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == chat_reference["completion_tokens"]
    assert usage_chunk.usage.prompt_tokens == chat_reference["prompt_tokens"]
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_chat_stop_sequence_is_cut_from_the_text_streamed_or_not(client: openai.OpenAI,
                                                                 chat_reference: dict[str, Any]) -> None:
    full = chat_reference["content"]
    stop = full[6:9]  # a stop string from inside the greedy text, probably spanning tokens
    expected = full[:full.find(stop)]
    kwargs: dict[str, Any] = {"model": "tgi", "messages": MESSAGES, "temperature": 0, "max_tokens": MAX_TOKENS,
                              "stop": [stop, "never-generated-zzz"]}
    response = client.chat.completions.create(**kwargs)
    assert response.choices[0].message.content == expected and response.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_logprobs_cover_every_token_and_their_bytes_rebuild_the_text(client: openai.OpenAI,
                                                                         chat_reference: dict[str, Any]) -> None:
    response = client.chat.completions.create(model="tgi", messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS,
                                              logprobs=True, top_logprobs=3)
    choice = response.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert response.usage is not None and len(entries) == response.usage.completion_tokens
    for entry in entries:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0.0
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].bytes == entry.bytes and entry.top_logprobs[0].logprob == entry.logprob
    if choice.finish_reason == "length":  # no EOS token (whose bytes are not content) at the end
        # A random model emits stray UTF-8 bytes; the text shows them as U+FFFD, the bytes keep them exact.
        raw = b"".join(bytes(entry.bytes or []) for entry in entries)
        assert raw.decode(errors="replace") == choice.message.content


def test_seeded_sampling_n_choices_equal_single_requests_with_successive_seeds(client: openai.OpenAI) -> None:
    sampled: dict[str, Any] = {"model": "tgi", "messages": MESSAGES, "temperature": 0.9, "max_tokens": 16}
    both = client.chat.completions.create(**sampled, n=2, seed=77)
    assert [choice.index for choice in both.choices] == [0, 1]
    singles = [client.chat.completions.create(**sampled, seed=seed) for seed in (77, 78)]
    texts = [single.choices[0].message.content for single in singles]
    assert [choice.message.content for choice in both.choices] == texts and texts[0] != texts[1]
    assert both.usage is not None and all(single.usage is not None for single in singles)
    assert both.usage.completion_tokens == sum(single.usage.completion_tokens for single in singles if single.usage)
    assert both.usage.prompt_tokens == singles[0].usage.prompt_tokens  # the prompt is counted once  # type: ignore


def test_completions_equal_tgi_generate_for_each_prompt_in_order(client: openai.OpenAI,
                                                                server: LauncherProcess) -> None:
    prompts = [PROMPT, "Bonjour, je suis"]
    expected = [tgi_generate(server, prompt, 12) for prompt in prompts]
    response = client.completions.create(model="tgi", prompt=prompts, temperature=0, max_tokens=12)
    assert [choice.index for choice in response.choices] == [0, 1]
    assert [choice.text for choice in response.choices] == [e["generated_text"] for e in expected]
    reasons = {"length": "length", "eos_token": "stop"}
    assert [choice.finish_reason for choice in response.choices] == [
        reasons[e["details"]["finish_reason"]] for e in expected]
    assert response.usage is not None
    assert response.usage.completion_tokens == sum(e["details"]["generated_tokens"] for e in expected)
    tokenize = httpx.post(f"{server.base_url}/tokenize", json={"inputs": PROMPT}).json()
    single = client.completions.create(model="tgi", prompt=PROMPT, temperature=0, max_tokens=12)
    assert single.usage is not None and single.usage.prompt_tokens == len(tokenize)
    streamed = client.completions.create(model="tgi", prompt=PROMPT, temperature=0, max_tokens=12, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == expected[0]["generated_text"]


def test_completions_default_to_16_tokens_and_report_logprobs_in_openai_shape(client: openai.OpenAI) -> None:
    response = client.completions.create(model="tgi", prompt=PROMPT, temperature=0, logprobs=2)
    choice = response.choices[0]
    assert response.usage is not None and response.usage.completion_tokens <= 16
    assert choice.logprobs is not None and choice.logprobs.tokens is not None
    assert len(choice.logprobs.tokens) == response.usage.completion_tokens
    assert choice.logprobs.text_offset is not None and choice.logprobs.text_offset[0] == 0
    assert choice.logprobs.text_offset == sorted(choice.logprobs.text_offset)
    assert choice.logprobs.top_logprobs is not None
    assert choice.logprobs.token_logprobs is not None
    for token, logprob, top in zip(choice.logprobs.tokens, choice.logprobs.token_logprobs,
                                   choice.logprobs.top_logprobs):
        # Top 2 plus the chosen token, keyed by text (tokens holding half a character may share the key "\ufffd").
        assert 1 <= len(top) <= 3 and top[token] == logprob and max(top.values()) == logprob


def test_models_list_names_the_served_model(client: openai.OpenAI, tiny_llama_dir: Path) -> None:
    assert [model.id for model in client.models.list()] == [str(tiny_llama_dir)]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"presence_penalty": 0.5}, "`presence_penalty` is not supported yet"),
    ({"temperature": -1}, "`temperature` must be >= 0 and <= 2"),
    ({"max_tokens": 600}, "must be <= 512 (--max-total-tokens)"),
    ({"top_logprobs": 2}, "`top_logprobs` needs `logprobs: true`"),
    ({"tool_choice": "required"}, "`tool_choice`"),
])
def test_openai_sdk_surfaces_validation_errors(client: openai.OpenAI, kwargs: dict[str, Any],
                                               fragment: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        client.chat.completions.create(model="tgi", messages=MESSAGES, **kwargs)
    # TGI's error body {"error", "error_type"}: the SDK exposes the message as `body`.
    assert raised.value.status_code == 422 and fragment in str(raised.value.body)
    assert raised.value.response.json()["error_type"] == "validation"


def test_inference_client_text_generation_and_chat_completion(server: LauncherProcess,
                                                              chat_reference: dict[str, Any]) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server.base_url)
    expected = tgi_generate(server, PROMPT, 12)
    output = client.text_generation(PROMPT, max_new_tokens=12, details=True)
    # The client posts to `/`, where return_full_text defaults to true as in TGI: the prompt comes back too.
    assert output.generated_text == PROMPT + expected["generated_text"] and output.details is not None
    assert output.details.generated_tokens == expected["details"]["generated_tokens"]
    assert output.details.finish_reason == expected["details"]["finish_reason"]
    assert [token.id for token in output.details.tokens] == [t["id"] for t in expected["details"]["tokens"]]
    streamed = list(client.text_generation(PROMPT, max_new_tokens=12, stream=True, details=True))
    assert "".join(event.token.text for event in streamed if not event.token.special) == expected["generated_text"]
    assert streamed[-1].details is not None and streamed[-1].details.generated_tokens == len(streamed)

    chat = client.chat_completion(MESSAGES, temperature=0, max_tokens=MAX_TOKENS)
    assert chat.choices[0].message.content == chat_reference["content"]
    assert chat.usage.completion_tokens == chat_reference["completion_tokens"]
    chunks = list(client.chat_completion(MESSAGES, temperature=0, max_tokens=MAX_TOKENS, stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == \
        chat_reference["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == chat_reference["finish_reason"]
