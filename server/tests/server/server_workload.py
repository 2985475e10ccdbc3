"""Workloads for the server tests: prompts of chosen token lengths and staggered concurrent HTTP clients."""
from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import httpx

from textgen_server.testing.corpus import CORPUS_LINES

# 24 prompt lengths from 1 to 300 tokens, around block (16) boundaries on purpose.
PROMPT_LENGTHS = [1, 2, 3, 5, 8, 15, 16, 17, 31, 32, 33, 47, 64, 65, 100, 127, 128, 150, 200, 231, 256, 270, 299,
                  300]
MAX_NEW_TOKENS = [1, 5, 17, 33, 40, 8, 24, 12]


@dataclass(frozen=True)
class Job:
    inputs: str
    prompt_ids: list[int]
    max_new_tokens: int
    delay_s: float
    stream: bool
    parameters: dict[str, Any]


def corpus_ids(tokenizer: Any, seed: int = 0) -> list[int]:
    """A long token sequence from shuffled corpus lines (no special tokens)."""
    lines = list(CORPUS_LINES) * 12
    random.Random(seed).shuffle(lines)
    return list(tokenizer(" ".join(lines), add_special_tokens=False)["input_ids"])


def prompt_of_length(tokenizer: Any, ids: list[int], length: int, offset: int = 0) -> tuple[str, list[int]]:
    """A text whose tokenization (with the tokenizer's own special tokens) has about `length` tokens."""
    num_special = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    body = ids[offset:offset + max(1, length - num_special)]
    text = tokenizer.decode(body)
    return text, list(tokenizer(text)["input_ids"])


def build_jobs(tokenizer: Any, prefix: str = "", stagger_s: float = 0.06, seed: int = 0) -> list[Job]:
    """24 greedy jobs of mixed prompt lengths and max_new_tokens, half streamed, arriving one after another.

    The arrival order interleaves long and short prompts so that the running batch grows and shrinks."""
    ids = corpus_ids(tokenizer, seed)
    order = list(range(len(PROMPT_LENGTHS)))
    random.Random(seed).shuffle(order)
    jobs = []
    for slot, index in enumerate(order):
        text, _ = prompt_of_length(tokenizer, ids, PROMPT_LENGTHS[index], offset=17 * index)
        inputs = prefix + text
        jobs.append(Job(inputs=inputs, prompt_ids=list(tokenizer(inputs)["input_ids"]),
                        max_new_tokens=MAX_NEW_TOKENS[index % len(MAX_NEW_TOKENS)], delay_s=slot * stagger_s,
                        stream=index % 2 == 1, parameters={}))
    return jobs


async def run_job(client: httpx.AsyncClient, job: Job) -> dict[str, Any]:
    """Sends one job after its delay; returns {"token_ids", "generated_text", "finish_reason"}."""
    await asyncio.sleep(job.delay_s)
    parameters = {"max_new_tokens": job.max_new_tokens, "details": True, **job.parameters}
    body = {"inputs": job.inputs, "parameters": parameters}
    if not job.stream:
        response = await client.post("/generate", json=body)
        response.raise_for_status()
        data = response.json()
        return {"token_ids": [t["id"] for t in data["details"]["tokens"]], "generated_text": data["generated_text"],
                "finish_reason": data["details"]["finish_reason"]}
    return await _stream(client, body)


async def _stream(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    token_ids: list[int] = []
    final: dict[str, Any] = {}
    async with client.stream("POST", "/generate_stream", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:"):])
            if "error" in event:
                raise RuntimeError(f"stream error: {event}")
            token_ids.append(event["token"]["id"])
            if event["details"] is not None:
                final = event
    return {"token_ids": token_ids, "generated_text": final.get("generated_text"),
            "finish_reason": final.get("details", {}).get("finish_reason")}


async def run_jobs(base_url: str, jobs: list[Job], timeout_s: float = 300.0) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:
        return list(await asyncio.gather(*(run_job(client, job) for job in jobs)))
