"""Speculation with tensor parallelism: --num-shard 2 --speculate 2 gives transformers' greedy tokens and accepts
candidates, and both ranks end warmup with the same decode-step cost table (the slowest rank's time per shape,
shard/verify_cost.py): the router uses rank 0's candidates, so they must be what the step's real cost says, and
what any rank would have chosen. The model is a float64 repetitive tiny Llama (its next token depends mostly on
the current one) and the prompts echo its own continuation, so n-gram candidates are accepted and rejected.

Acceptance is asserted under `--speculation-costs flat`: with measured costs, whether candidates pay on this tiny
model is the machine's timings' call (a loaded or lucky warmup may say they never do), so the measured run checks
exactness and the ranks' one table, not how many candidates were proposed."""
from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from server_workload import Job, run_jobs
from textgen_server.testing.repetitive_model import build_repetitive_model
from tp_testlib import TP_MODEL_OVERRIDES, ReferenceCache, tp_flags

pytestmark = pytest.mark.slow

NUM_NEW = 30


def _echo_jobs(model_dir, reference: ReferenceCache) -> list[Job]:
    """Four prompts: random tokens, the model's own 24 greedy tokens after them, and their first 3 again."""
    import torch

    tokenizer = reference.tokenizer(model_dir)
    generator = torch.Generator().manual_seed(11)
    jobs = []
    for length in (10, 13, 17, 21):
        ids = list(tokenizer(tokenizer.decode(torch.randint(10, 700, (length,), generator=generator).tolist()))
                   ["input_ids"])
        echo = reference.greedy(model_dir, ids, 24)
        text = tokenizer.decode(ids + echo + echo[:3], skip_special_tokens=True)
        jobs.append(Job(text, list(tokenizer(text)["input_ids"]), NUM_NEW, 0.0, length % 2 == 1, {}))
    return jobs


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def _run_exact(module_launch, reference: ReferenceCache, model_dir, costs: str):
    server = module_launch(model_dir, *tp_flags(2), "--speculate", "2", "--speculation-costs", costs)
    jobs = _echo_jobs(model_dir, reference)
    results = asyncio.run(run_jobs(server.base_url, jobs))
    for job, result in zip(jobs, results):
        assert result["token_ids"] == reference.greedy(model_dir, job.prompt_ids, NUM_NEW)
    return server


def test_two_shards_speculate_exactly_accepting_and_rejecting(module_launch, float64_reference: ReferenceCache,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    model_dir = build_repetitive_model(tmp_path_factory.mktemp("tp-repetitive"), "llama", **TP_MODEL_OVERRIDES)
    server = _run_exact(module_launch, float64_reference, model_dir, "flat")
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    accepted = _metric(metrics, "tgi_speculative_accepted_tokens")
    assert 0 < accepted < _metric(metrics, "tgi_speculative_proposed_tokens")  # accepted and rejected ones
    assert server.stop() == 0


def test_two_shards_speculate_exactly_with_one_cost_table(module_launch, float64_reference: ReferenceCache,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    model_dir = build_repetitive_model(tmp_path_factory.mktemp("tp-repetitive"), "llama", **TP_MODEL_OVERRIDES)
    server = _run_exact(module_launch, float64_reference, model_dir, "measured")
    assert server.stop() == 0
    tables = re.findall(r"rank (\d): decode step cost at batch (\d+), 1\.\.3 query tokens per row: ([\d. ]+) ms",
                        server.log())
    by_rank = {rank: sorted((batch, costs) for r, batch, costs in tables if r == rank) for rank in ("0", "1")}
    assert len(by_rank["0"]) == 2 and by_rank["0"] == by_rank["1"], tables
