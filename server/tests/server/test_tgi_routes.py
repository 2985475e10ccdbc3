"""TGI's routes and parameters against the real launcher: GET / and /info, /ping, POST / and /invocations,
/tokenize, best_of with best_of_sequences, truncate, decoder_input_details, and unsupported features (422)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

pytestmark = pytest.mark.slow

PROMPT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "40", "--max-total-tokens", "64",
                             "--max-best-of", "3")


def post(server: LauncherProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def test_get_root_is_info_and_ping_is_health(server: LauncherProcess) -> None:
    root, info = httpx.get(f"{server.base_url}/").json(), httpx.get(f"{server.base_url}/info").json()
    assert root == info and info["max_best_of"] == 3 and info["max_client_batch_size"] == 4
    assert httpx.get(f"{server.base_url}/ping").status_code == 200


@pytest.mark.parametrize("path", ["/", "/invocations"])
def test_compat_routes_answer_as_generate(server: LauncherProcess, path: str) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": True}}
    expected = post(server, "/generate", body).json()
    # Non-streamed, TGI answers a one-element list (test_tgi_compat_clients.py has the rest of these routes).
    body["parameters"]["return_full_text"] = False  # the compat routes' default is true, as TGI's
    [answered] = post(server, path, body).json()
    # Logprobs may differ in the last digits (the prefix cache changes the kernels' shapes): compare ids and text.
    assert answered["generated_text"] == expected["generated_text"]
    assert [t["id"] for t in answered["details"]["tokens"]] == [t["id"] for t in expected["details"]["tokens"]]
    streamed = post(server, path, {**body, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data:"):]) for line in streamed.text.splitlines() if line.startswith("data:")]
    assert [e["token"]["id"] for e in events] == [t["id"] for t in expected["details"]["tokens"]]
    assert events[-1]["generated_text"] == expected["generated_text"]


def test_tokenize_gives_ids_texts_and_spans(server: LauncherProcess) -> None:
    tokens = post(server, "/tokenize", {"inputs": PROMPT}).json()
    assert tokens and all(set(t) == {"id", "text", "start", "stop"} for t in tokens)
    assert all(t["text"] == PROMPT[t["start"]:t["stop"]] for t in tokens)
    assert "".join(t["text"] for t in tokens).replace(" ", "") == PROMPT.replace(" ", "")


def test_best_of_returns_the_most_likely_candidate_and_the_others(server: LauncherProcess) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "details": True, "best_of": 3,
                                             "do_sample": True}}
    details = post(server, "/generate", body).json()["details"]
    others = details["best_of_sequences"]
    assert len(others) == 2 and len({details["seed"], *(o["seed"] for o in others)}) == 3

    def score(tokens: list[dict[str, Any]]) -> float:
        return sum(t["logprob"] for t in tokens)

    assert all(score(details["tokens"]) >= score(o["tokens"]) for o in others)
    assert set(others[0]) == {"generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens",
                              "top_tokens"}


@pytest.mark.parametrize(("path", "parameters", "fragment"), [
    ("/generate", {"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ("/generate", {"best_of": 4, "do_sample": True}, "`best_of` must be > 0 and <= 3 (--max-best-of). Given: 4"),
    ("/generate", {"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ("/generate_stream", {"best_of": 2, "do_sample": True}, "`best_of` != 1 is not allowed for this endpoint"),
    ("/generate", {"grammar": {"type": "regex", "value": "a("}}, "`grammar`: the grammar is not valid"),
    ("/generate", {"truncate": 41}, "`truncate` must be strictly positive and at most 40"),
])
def test_unsupported_or_invalid_parameters_are_422(server: LauncherProcess, path: str, parameters: dict[str, Any],
                                                   fragment: str) -> None:
    response = post(server, path, {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, **parameters}})
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "validation" and fragment in response.json()["error"]


def test_truncate_keeps_the_last_prompt_tokens(server: LauncherProcess) -> None:
    prompt_ids = [t["id"] for t in post(server, "/tokenize", {"inputs": PROMPT}).json()]
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "details": True, "decoder_input_details": True,
                                             "truncate": 3}}
    details = post(server, "/generate", body).json()["details"]
    assert [t["id"] for t in details["prefill"]] == prompt_ids[-3:]
    # Without truncate this prompt of more than 40 tokens would be refused.
    long_prompt = " ".join([PROMPT] * 6)
    assert post(server, "/generate", {"inputs": long_prompt, "parameters": {"max_new_tokens": 2}}).status_code == 422
    kept = post(server, "/generate", {"inputs": long_prompt, "parameters": {"max_new_tokens": 2, "truncate": 10}})
    assert kept.status_code == 200, kept.text
