"""The client's view through a real launcher with --speculate 2, as TGI shows it: every accepted token is its own
stream event and details.tokens entry (with logprob and top-n), identical to the server without speculation;
/info says the setting; /metrics counts skipped tokens and the acceptance rate's two counters."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from spec_testlib import EngineRun, echo_prompts, random_prompts
from textgen_server.testing.bench_launcher import running_launcher

pytestmark = pytest.mark.slow


def _generate(base_url: str, text: str) -> dict:
    body = {"inputs": text, "parameters": {"max_new_tokens": 30, "details": True, "top_n_tokens": 2,
                                           "decoder_input_details": False}}
    response = httpx.post(f"{base_url}/generate", json=body, timeout=300)
    response.raise_for_status()
    return response.json()


def _stream(base_url: str, text: str) -> list[dict]:
    body = {"inputs": text, "parameters": {"max_new_tokens": 30, "details": True}}
    with httpx.stream("POST", f"{base_url}/generate_stream", json=body, timeout=300) as response:
        return [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match is not None, f"{name} missing from /metrics"
    return float(match.group(1))


def test_speculative_tokens_reach_clients_one_by_one(repetitive_model_dir, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model_dir: Path = repetitive_model_dir("llama")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = echo_prompts(EngineRun(model_dir, speculate=0), random_prompts(2, 10, 700, seed=41))
    texts = [tokenizer.decode(p, skip_special_tokens=True) for p in prompts]
    with running_launcher(model_dir, [], tmp_path, name="plain") as base_url:
        plain = [_generate(base_url, text) for text in texts]
    # flat costs: whether candidates pay on this machine's timings is not what this test is about, and a loaded
    # machine's warmup timings could make the measured rule propose none (the rule: test_adaptive.py).
    with running_launcher(model_dir, ["--speculate", "2", "--speculation-costs", "flat"], tmp_path,
                          name="spec") as base_url:
        info = httpx.get(f"{base_url}/info").json()
        assert (info["speculate"], info["speculation"]) == (2, "ngram")
        spec = [_generate(base_url, text) for text in texts]
        events = _stream(base_url, texts[0])
        metrics = httpx.get(f"{base_url}/metrics").text
    for got, want in zip(spec, plain):
        assert got["generated_text"] == want["generated_text"]
        assert got["details"]["tokens"] == want["details"]["tokens"]       # ids, texts, logprobs
        assert got["details"]["top_tokens"] == want["details"]["top_tokens"]
        assert len(got["details"]["tokens"]) == got["details"]["generated_tokens"] == 30
    assert len(events) == 30 and events[-1]["details"]["generated_tokens"] == 30
    assert [e["token"]["id"] for e in events] == [t["id"] for t in plain[0]["details"]["tokens"]]
    accepted = _metric(metrics, "tgi_speculative_accepted_tokens")
    assert 0 < accepted <= _metric(metrics, "tgi_speculative_proposed_tokens")
    assert _metric(metrics, "tgi_request_skipped_tokens_sum") == accepted
