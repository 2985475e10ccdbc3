"""decoder_input_details through the real launcher: details.prefill holds every prompt token with
log P(token | tokens before it), equal to transformers' float32 log_softmax, the first one null.

The prefill budget is small (16 tokens), so the prompt is computed in several chunks; the same prompt is sent
once before without details, so its blocks sit in the prefix cache, which a request asking for prompt logprobs
must not use (the log line of each request says how many tokens were cached and in how many chunks).
"""
from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from server_testlib import Launch

pytestmark = pytest.mark.slow

PROMPT = "The quick brown fox jumps over the lazy dog. " * 4
TOLERANCE = 1e-4


def _transformers_prompt_logprobs(model_dir: Path, prompt_ids: list[int]) -> list[float]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(torch.tensor([prompt_ids])).logits[0].float(), dim=-1)
    return logprobs[:-1].gather(1, torch.tensor(prompt_ids[1:])[:, None]).squeeze(1).tolist()


def test_prefill_logprobs_match_transformers_over_chunks_and_skip_the_prefix_cache(
        tiny_llama_dir: Path, launch: Launch) -> None:
    server = launch(tiny_llama_dir, "--max-batch-prefill-tokens", "16", "--max-input-tokens", "100",
                    "--max-total-tokens", "128")
    url = f"{server.base_url}/generate"
    warm = httpx.post(url, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}, timeout=120)
    assert warm.status_code == 200, warm.text
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 3, "details": True, "decoder_input_details": True}}
    answer = httpx.post(url, json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    prefill = answer.json()["details"]["prefill"]
    prompt_ids = [token["id"] for token in prefill]
    assert len(prompt_ids) > 32, "the prompt must span several 16-token chunks"
    assert prefill[0]["logprob"] is None
    expected = _transformers_prompt_logprobs(tiny_llama_dir, prompt_ids)
    actual = [token["logprob"] for token in prefill[1:]]
    worst = max(abs(a - e) for a, e in zip(actual, expected, strict=True))
    assert worst < TOLERANCE, f"largest prompt logprob difference {worst}"
    # Request 1 warmed the cache; request 2 (with details) computed everything from position 0, in chunks.
    lines = [line for line in server.log().splitlines() if "prefill_chunks=" in line]
    assert len(lines) == 2, lines
    assert int(re.search(r"cached_tokens=(\d+)", lines[1]).group(1)) == 0  # type: ignore[union-attr]
    assert int(re.search(r"prefill_chunks=(\d+)", lines[1]).group(1)) >= 3  # type: ignore[union-attr]
    # The same request without decoder_input_details does take the cache (the test would not show a skip else).
    httpx.post(url, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}, timeout=120)
    third = [line for line in server.log().splitlines() if "prefill_chunks=" in line][2]
    assert int(re.search(r"cached_tokens=(\d+)", third).group(1)) > 0  # type: ignore[union-attr]
