"""The TGI HTTP surface on one shared tiny-llama server: info, validation, seeded sampling, stop sequences,
streaming shape, huggingface_hub's InferenceClient, and client disconnects."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

pytestmark = pytest.mark.slow

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "300", "--max-total-tokens", "512")


def generate(server: LauncherProcess, inputs: str, **parameters: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/generate", timeout=120,
                          json={"inputs": inputs, "parameters": {"details": True, **parameters}})
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_info(server: LauncherProcess, tiny_llama_dir: Path) -> None:
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    info = httpx.get(f"{server.base_url}/info").json()
    assert info["model_id"] == str(tiny_llama_dir)
    assert (info["model_dtype"], info["model_device_type"]) == ("torch.float32", "cpu")
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (300, 512)
    assert info["max_batch_total_tokens"] >= 512 and info["version"]


def test_overlong_input_is_rejected_with_422_and_disturbs_nobody(server: LauncherProcess) -> None:
    async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 30, "details": True}}
            normal = [asyncio.ensure_future(client.post("/generate", json=body)) for _ in range(4)]
            await asyncio.sleep(0.05)
            long_input = "word " * 400
            rejected = await client.post("/generate", json={"inputs": long_input, "parameters": {"max_new_tokens": 5}})
            return rejected, list(await asyncio.gather(*normal))

    rejected, normal = asyncio.run(scenario())
    assert rejected.status_code == 422
    body = rejected.json()
    assert body["error_type"] == "validation"
    assert "must be <= 300" in body["error"] and "shorten the prompt" in body["error"]
    texts = {response.json()["generated_text"] for response in normal}
    assert all(response.status_code == 200 for response in normal) and len(texts) == 1
    assert texts == {generate(server, PROMPT, max_new_tokens=30)["generated_text"]}


@pytest.mark.parametrize(("parameters", "fragment"), [
    ({"max_new_tokens": 510}, "must be <= 512 (--max-total-tokens)"),
    ({"temperature": -1.0}, "`temperature` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "up to 4 stop sequences"),
])
def test_invalid_parameters_are_422(server: LauncherProcess, parameters: dict, fragment: str) -> None:
    response = httpx.post(f"{server.base_url}/generate", json={"inputs": PROMPT, "parameters": parameters})
    assert response.status_code == 422 and fragment in response.json()["error"]


def test_malformed_body_is_422_in_tgi_shape(server: LauncherProcess) -> None:
    response = httpx.post(f"{server.base_url}/generate", json={"parameters": {}})
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation" and "inputs" in response.json()["error"]


def test_seeded_sampling_gives_the_same_text_alone_and_in_a_busy_batch(server: LauncherProcess) -> None:
    sampled = {"do_sample": True, "seed": 1234, "temperature": 0.9, "top_k": 50, "max_new_tokens": 40}
    alone = generate(server, PROMPT, **sampled)

    async def busy() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            others = [client.post("/generate", json={"inputs": f"Noise request {i} " * (i + 1), "parameters": {
                "do_sample": True, "max_new_tokens": 30 + i}}) for i in range(12)]
            mine = client.post("/generate", json={"inputs": PROMPT, "parameters": {"details": True, **sampled}})
            responses = await asyncio.gather(*others[:6], mine, *others[6:])
            return responses[6].json()

    in_batch = asyncio.run(busy())
    assert in_batch["generated_text"] == alone["generated_text"]
    assert [t["id"] for t in in_batch["details"]["tokens"]] == [t["id"] for t in alone["details"]["tokens"]]
    assert alone["details"]["seed"] == 1234
    different = generate(server, PROMPT, **{**sampled, "seed": 4321})
    assert different["generated_text"] != alone["generated_text"]


def test_stop_sequence_ends_the_request_at_the_match(server: LauncherProcess) -> None:
    full = generate(server, PROMPT, max_new_tokens=40)
    text = full["generated_text"]
    assert len(text) > 12, f"the tiny model generated too little text to cut: {text!r}"
    stop = text[6:10]
    stopped = generate(server, PROMPT, max_new_tokens=40, stop=[stop])
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    cut = stopped["generated_text"]
    assert stop in cut and text.startswith(cut) and len(cut) < len(text)


def test_stream_events_have_tgi_shape(server: LauncherProcess) -> None:
    events = []
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "top_n_tokens": 2}}
    with httpx.stream("POST", f"{server.base_url}/generate_stream", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert [e["index"] for e in events] == list(range(len(events)))
    for event in events[:-1]:
        assert set(event) == {"index", "token", "top_tokens", "generated_text", "details"}
        assert set(event["token"]) == {"id", "text", "logprob", "special"}
        assert event["generated_text"] is None and event["details"] is None
        assert len(event["top_tokens"]) == 2 and event["token"]["logprob"] <= 0
    final = events[-1]
    assert final["generated_text"] == "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    assert set(final["details"]) == {"finish_reason", "generated_tokens", "seed", "input_length"}
    assert final["details"]["generated_tokens"] == len(events)


def test_huggingface_hub_inference_client(server: LauncherProcess) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server.base_url)
    expected = generate(server, PROMPT, max_new_tokens=12)["generated_text"]
    output = client.text_generation(PROMPT, max_new_tokens=12, details=True)
    assert output.generated_text == PROMPT + expected     # `/` defaults to return_full_text, as TGI
    assert output.details is not None and output.details.generated_tokens == 12 or \
        output.details.finish_reason == "eos_token"
    streamed = "".join(client.text_generation(PROMPT, max_new_tokens=12, stream=True))
    assert streamed == expected


def test_client_disconnect_cancels_a_stream(server: LauncherProcess) -> None:
    cancelled_before = server.log().count("cancelled by the client")
    body = {"inputs": "A request nobody waits for", "parameters": {"max_new_tokens": 480, "ignore_eos_token": True}}
    with httpx.stream("POST", f"{server.base_url}/generate_stream", json=body, timeout=60) as response:
        for number, _ in enumerate(response.iter_lines()):
            if number >= 6:
                break
    _wait_for_log_count(server, "cancelled by the client", cancelled_before + 1)


def test_client_disconnect_cancels_a_generate_call(server: LauncherProcess) -> None:
    cancelled_before = server.log().count("cancelled by the client")
    body = {"inputs": "Another request nobody waits for",
            "parameters": {"max_new_tokens": 480, "ignore_eos_token": True}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/generate", json=body, timeout=0.3)
    _wait_for_log_count(server, "cancelled by the client", cancelled_before + 1)


def _wait_for_log_count(server: LauncherProcess, text: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.log().count(text) >= count, f"expected {count} x {text!r} in the launcher log"
