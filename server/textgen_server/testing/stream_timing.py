"""Timed /generate_stream clients shared by the server benchmarks (hack/bench-server.py, hack/bench-tp.py)."""
from __future__ import annotations

import asyncio
import json
import time

import httpx


async def stream_all(base_url: str, texts: list[str], output_tokens: int) -> list[list[float]]:
    """All prompts at once; per request: [send time, token 1 time, token 2 time, ...] (perf_counter seconds)."""
    limits = httpx.Limits(max_connections=len(texts) + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=3600, limits=limits) as client:
        return list(await asyncio.gather(*(stream_one(client, text, output_tokens) for text in texts)))


async def stream_one(client: httpx.AsyncClient, text: str, output_tokens: int) -> list[float]:
    """One stream of exactly `output_tokens` tokens (EOS ignored); raises on an error event."""
    times = [time.perf_counter()]
    body = {"inputs": text, "parameters": {"max_new_tokens": output_tokens, "ignore_eos_token": True}}
    async with client.stream("POST", "/generate_stream", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                if "error" in json.loads(line[5:]):
                    raise RuntimeError(line)
                times.append(time.perf_counter())
    return times
