"""A shard failure answers TGI's 424 {"error_type": "generation"} on /generate, and ends a stream with an error
event. The app, batcher, scheduler and tokenizer are real and in-process; the shard client is a stand-in whose
step raises, because a real shard that dies also takes the launcher down (by design), racing the response."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from textgen_server.engine.block_manager import BlockManager
from textgen_server.engine.scheduler import Scheduler, SchedulerConfig
from textgen_server.protocol import Generation, StepItem
from textgen_server.router.app import Phase, RouterState, Serving, build_app
from textgen_server.router.batcher import Batcher
from textgen_server.router.schemas import Info
from textgen_server.router.validation import Limits


class BrokenShard:
    """The StepClient of a shard whose forward pass fails (out of memory, a dead device, ...)."""

    async def step(self, items: list[StepItem], is_prefill: bool) -> list[Generation]:
        raise RuntimeError("CUDA error: device-side assert triggered")

    async def filter(self, request_ids: list[int]) -> None:
        return None

    async def close(self) -> None:
        return None


def _serving(tokenizer: object) -> Serving:
    config = SchedulerConfig(max_batch_prefill_tokens=64, max_batch_total_tokens=256, max_batch_size=None,
                             waiting_served_ratio=0.3, max_waiting_tokens=20, block_size=16)
    batcher = Batcher(Scheduler(config, BlockManager(16, 16)), BrokenShard(), tokenizer,  # type: ignore[arg-type]
                      eos_token_ids=frozenset())
    limits = Limits(max_input_tokens=32, max_total_tokens=64, max_stop_sequences=4, max_top_n_tokens=5,
                    kv_capacity_tokens=256)
    info = Info(model_id="tiny", model_dtype="torch.float32", model_device_type="cpu", max_concurrent_requests=8,
                max_stop_sequences=4, max_input_tokens=32, max_total_tokens=64, max_batch_total_tokens=256,
                max_batch_prefill_tokens=64, waiting_served_ratio=0.3, max_waiting_tokens=20, max_batch_size=None,
                version="test")
    return Serving(batcher=batcher, tokenizer=tokenizer, limits=limits, info=info, max_concurrent_requests=8)


@pytest.mark.parametrize("path", ["/generate", "/generate_stream"])
def test_a_failing_shard_step_is_a_424_generation_error(tiny_llama_dir: Path, path: str) -> None:
    async def scenario() -> httpx.Response:
        state = RouterState()
        state.serving = _serving(AutoTokenizer.from_pretrained(tiny_llama_dir))
        state.phase = Phase.READY
        loop = asyncio.create_task(state.serving.batcher.run())
        try:
            transport = httpx.ASGITransport(app=build_app(state))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.post(path, json={"inputs": "hello", "parameters": {"max_new_tokens": 3}})
        finally:
            loop.cancel()

    response = asyncio.run(scenario())
    if path == "/generate":
        assert response.status_code == 424
        body = response.json()
    else:  # the headers were sent before the failure: the error is the stream's last event
        assert response.status_code == 200
        body = json.loads(response.text.strip().splitlines()[-1][len("data:"):])
    assert body["error_type"] == "generation" and "device-side assert" in body["error"]


@pytest.mark.parametrize(("path", "stream", "status"), [("/generate", True, 422), ("/generate_stream", False, 422),
                                                        ("/generate", False, 424), ("/generate_stream", True, 200)])
def test_a_stream_field_that_contradicts_the_route_is_refused(tiny_llama_dir: Path, path: str, stream: bool,
                                                              status: int) -> None:
    """TGI ignores `stream` on these routes; here a contradicting one is a 422 naming the route to use (a matching
    one goes on to the shard, which fails here: 424 or an error event)."""
    async def scenario() -> httpx.Response:
        state = RouterState()
        state.serving = _serving(AutoTokenizer.from_pretrained(tiny_llama_dir))
        state.phase = Phase.READY
        loop = asyncio.create_task(state.serving.batcher.run())
        try:
            transport = httpx.ASGITransport(app=build_app(state))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.post(path, json={"inputs": "hello", "stream": stream,
                                                     "parameters": {"max_new_tokens": 3}})
        finally:
            loop.cancel()

    response = asyncio.run(scenario())
    assert response.status_code == status, response.text
    if status == 422:
        assert f"`stream` {str(stream).lower()} does not fit this route" in response.json()["error"]
