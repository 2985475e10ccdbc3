"""`watermark: true` through the real launcher (--watermark-gamma 0.25): the detector finds it in 200 sampled
tokens (temperature 1) and not in unwatermarked ones; best_of candidates are all watermarked; seeded requests stay
reproducible; logprobs are reported. The detector scores the token ids /generate reports (its CLI once, the
function for the rest: each CLI run loads transformers, which is slow on a busy machine)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

from textgen_server.sampling.watermark_detect import WatermarkScore, score_token_ids

pytestmark = pytest.mark.slow

PROMPT = "The quick brown fox"
GAMMA = 0.25
NUM_TOKENS = 200


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "32", "--max-total-tokens", "256",
                             "--watermark-gamma", str(GAMMA))


def generate(server: LauncherProcess, **parameters: Any) -> dict[str, Any]:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": NUM_TOKENS, "ignore_eos_token": True,
                                             "details": True, "do_sample": True, **parameters}}
    response = httpx.post(f"{server.base_url}/generate", json=body, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def score(tokens: list[dict[str, Any]], prompt_ids: list[int], vocab_size: int) -> WatermarkScore:
    return score_token_ids([t["id"] for t in tokens], vocab_size, GAMMA, prompt_ids[-1])


def detect(model_dir: Path, tokens: list[dict[str, Any]]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "textgen_server.sampling.watermark_detect", "--model",
                           str(model_dir), "--gamma", str(GAMMA), "--prompt", PROMPT,
                           "--token-ids", json.dumps([t["id"] for t in tokens])],
                          capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def answers(server: LauncherProcess) -> dict[str, Any]:
    """Seeded watermarked and plain requests, a watermarked best_of and a repeat, all in flight together."""
    requests: dict[str, dict[str, Any]] = {
        **{f"marked-{seed}": {"seed": seed, "watermark": True} for seed in (11, 12, 13)},
        **{f"plain-{seed}": {"seed": seed} for seed in (11, 12, 13)},
        "repeat-11": {"seed": 11, "watermark": True},
        "best-of": {"best_of": 2, "watermark": True},
    }
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = {name: pool.submit(generate, server, **parameters) for name, parameters in requests.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def prompt_ids(server: LauncherProcess) -> list[int]:
    return [t["id"] for t in httpx.post(f"{server.base_url}/tokenize", json={"inputs": PROMPT}).json()]


@pytest.fixture(scope="module")
def vocab_size(tiny_llama_dir: Path) -> int:
    return int(json.loads((tiny_llama_dir / "config.json").read_text())["vocab_size"])  # the logits' width


def test_watermarked_outputs_are_detected_and_plain_ones_are_not(answers: dict[str, Any], prompt_ids: list[int],
                                                                 vocab_size: int, tiny_llama_dir: Path) -> None:
    for seed in (11, 12, 13):
        marked = score(answers[f"marked-{seed}"]["details"]["tokens"], prompt_ids, vocab_size)
        plain = score(answers[f"plain-{seed}"]["details"]["tokens"], prompt_ids, vocab_size)
        assert marked.num_scored == plain.num_scored == NUM_TOKENS
        assert marked.z_score > 4 and plain.z_score < 4, (seed, marked, plain)
    cli = detect(tiny_llama_dir, answers["marked-12"]["details"]["tokens"])
    assert cli["watermarked"] is True
    assert cli["z_score"] == pytest.approx(score(answers["marked-12"]["details"]["tokens"], prompt_ids, vocab_size).z_score)


def test_every_best_of_candidate_is_watermarked(answers: dict[str, Any], prompt_ids: list[int],
                                                vocab_size: int) -> None:
    details = answers["best-of"]["details"]
    candidates = [details["tokens"], *(other["tokens"] for other in details["best_of_sequences"])]
    assert len(candidates) == 2
    assert all(score(tokens, prompt_ids, vocab_size).z_score > 4 for tokens in candidates)


def test_seeded_watermarked_requests_repeat_and_report_logprobs(answers: dict[str, Any]) -> None:
    first, again = answers["marked-11"], answers["repeat-11"]
    assert [t["id"] for t in first["details"]["tokens"]] == [t["id"] for t in again["details"]["tokens"]]
    assert first["details"]["seed"] == 11
    assert all(math.isfinite(t["logprob"]) and t["logprob"] <= 0 for t in first["details"]["tokens"])
    # The watermark changed the output: the same seed without it samples other tokens.
    assert first["generated_text"] != answers["plain-11"]["generated_text"]
