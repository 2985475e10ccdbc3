"""/metrics on the real launcher after a known workload: counters and histograms add up to what was sent."""
from __future__ import annotations

import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

from textgen_server.router.metrics import parse_exposition

pytestmark = pytest.mark.slow

# (max_new_tokens, streamed) per request; ignore_eos makes every request generate exactly max_new_tokens.
WORKLOAD = [(n, i % 2 == 1) for i, n in enumerate((3, 5, 8, 13, 4, 6, 9, 2, 7, 10))]
NUM_INVALID = 3


def scrape(server: LauncherProcess) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], str]:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {(name, tuple(sorted(labels.items()))): value for name, labels, value in parse_exposition(response.text)}
    return samples, response.text


def _send(server: LauncherProcess, index: int, max_new_tokens: int, streamed: bool) -> int:
    body = {"inputs": f"Request {index}: the weather today is",
            "parameters": {"max_new_tokens": max_new_tokens, "ignore_eos_token": True, "details": True}}
    if not streamed:
        response = httpx.post(f"{server.base_url}/generate", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return int(response.json()["details"]["generated_tokens"])
    events = []
    with httpx.stream("POST", f"{server.base_url}/generate_stream", json=body, timeout=120) as response:
        assert response.status_code == 200
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    return int(events[-1]["details"]["generated_tokens"])


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "100", "--max-total-tokens", "200")


def test_metrics_match_a_known_workload(server: LauncherProcess) -> None:
    before, _ = scrape(server)
    assert before[("tgi_warmup_state", ())] == 2 and before[("tgi_warmup_duration_seconds", ())] > 0
    assert before[("tgi_server_phase", (("phase", "ready"),))] == 1
    with ThreadPoolExecutor(max_workers=len(WORKLOAD)) as pool:
        generated = list(pool.map(lambda job: _send(server, job[0], *job[1]), enumerate(WORKLOAD)))
    assert generated == [n for n, _ in WORKLOAD]
    for _ in range(NUM_INVALID):  # temperature must be > 0: a validation failure, counted as such
        bad = httpx.post(f"{server.base_url}/generate", json={"inputs": "x", "parameters": {"temperature": -1}})
        assert bad.status_code == 422
    after, text = scrape(server)
    delta = defaultdict(float, {key: value - before.get(key, 0.0) for key, value in after.items()})
    num_requests, total_tokens = len(WORKLOAD), sum(n for n, _ in WORKLOAD)

    assert delta[("tgi_request_count", ())] == num_requests + NUM_INVALID
    assert delta[("tgi_request_success", ())] == num_requests
    assert delta[("tgi_request_failure", (("err", "validation"),))] == NUM_INVALID
    assert delta[("tgi_request_generated_tokens_count", ())] == num_requests
    assert delta[("tgi_request_generated_tokens_sum", ())] == total_tokens
    assert delta[("tgi_request_max_new_tokens_sum", ())] == total_tokens
    for histogram in ("tgi_request_duration", "tgi_request_queue_duration", "tgi_request_inference_duration",
                      "tgi_request_time_to_first_token_seconds", "tgi_request_input_length",
                      "tgi_request_mean_time_per_token_duration", "tgi_request_validation_duration"):
        assert delta[(f"{histogram}_count", ())] == num_requests, histogram
    # One inter-token gap per token after each request's first.
    assert delta[("tgi_request_inter_token_latency_seconds_count", ())] == total_tokens - num_requests
    steps = sum(delta[("tgi_batch_inference_count", (("method", m),))] for m in ("prefill", "decode"))
    assert steps >= max(n for n, _ in WORKLOAD) and delta[("tgi_batch_next_size_count", ())] == steps
    assert delta[("tgi_batch_inference_success", (("method", "decode"),))] > 0
    # Everything drained: nothing queued, running or holding KV blocks.
    for gauge in ("tgi_queue_size", "tgi_batch_current_size", "tgi_batch_current_max_tokens",
                  "tgi_request_in_flight", "tgi_kv_cache_blocks_used", "tgi_kv_cache_usage_ratio"):
        assert after[(gauge, ())] == 0, gauge
    assert after[("tgi_kv_cache_num_blocks", ())] > 0
    # TGI's exposition: bare counter names, no `_created` series.
    assert "\ntgi_request_count " in text and "_total" not in text and "_created" not in text, text[:2000]
