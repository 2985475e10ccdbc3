"""Seeded sampling is the same with 2 shards as with 1: same tokens and (float64) logprobs for every seed.

Every rank ends a step with the same gathered logits and samples with the same seeded generator; the router
uses rank 0's token. Eight seeded requests run concurrently (a busy batch), with temperature, top-k, top-p and a
repetition penalty, and streams mixed in, on an N=1 and an N=2 launcher of the same float64 model."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from tp_testlib import tp_flags

pytestmark = pytest.mark.slow

PROMPTS = ["Once upon a time", "The weather today", "In a distant galaxy", "Write a poem about", "Hello",
           "The capital of France is", "Numbers: 1, 2, 3,", "Dear diary,"]


async def _sample_all(base_url: str) -> list[tuple[list[int], list[float]]]:
    async def one(client: httpx.AsyncClient, index: int, prompt: str) -> tuple[list[int], list[float]]:
        parameters = {"do_sample": True, "seed": 1000 + index, "temperature": 0.9, "top_k": 50, "top_p": 0.95,
                      "repetition_penalty": 1.1, "max_new_tokens": 24, "details": True}
        response = await client.post("/generate", json={"inputs": prompt, "parameters": parameters})
        response.raise_for_status()
        tokens = response.json()["details"]["tokens"]
        return [t["id"] for t in tokens], [t["logprob"] for t in tokens]

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        return list(await asyncio.gather(*(one(client, i, p) for i, p in enumerate(PROMPTS))))


def test_seeded_sampling_with_two_shards_equals_one_shard(tp_model_dir, module_launch) -> None:
    model_dir = tp_model_dir("llama")
    single = module_launch(model_dir, "--device", "cpu", wait=False)
    sharded = module_launch(model_dir, *tp_flags(2), wait=False)
    single.wait_healthy()
    sharded.wait_healthy()
    expected = asyncio.run(_sample_all(single.base_url))
    got = asyncio.run(_sample_all(sharded.base_url))
    assert [ids for ids, _ in got] == [ids for ids, _ in expected]
    for (_, logprobs), (_, reference) in zip(got, expected):
        assert logprobs == pytest.approx(reference, abs=1e-6)
    # The samples are really random draws, not greedy choices in disguise.
    greedy = [ids for ids, logprobs in expected if all(lp > -1e-9 for lp in logprobs)]
    assert len(greedy) < len(PROMPTS)
    assert single.stop() == 0 and sharded.stop() == 0
