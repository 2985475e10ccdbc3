"""The batching loop sends step N+1 before it delivers step N's tokens (the shard computes while the router
detokenizes), and what clients see is unchanged: every token once, in order, a stop sequence still ends its request
at the match. Real scheduler, batcher and tokenizer; the shard is a scripted stand-in that answers fixed token ids,
so the test can look at the loop's order of operations, which a real shard's timing would hide."""
from __future__ import annotations

import asyncio
from pathlib import Path

from transformers import AutoTokenizer

from textgen_server.engine.block_manager import BlockManager
from textgen_server.engine.scheduler import Scheduler, SchedulerConfig
from textgen_server.protocol import Generation, StepItem, Token
from textgen_server.router.batcher import Batcher
from textgen_server.router.schemas import GenerateParameters
from textgen_server.router.stream import TokenEvent
from textgen_server.router.validation import Limits, validate

LIMITS = Limits(max_input_tokens=32, max_total_tokens=64, max_stop_sequences=4, max_top_n_tokens=5,
                kv_capacity_tokens=1024)


class ScriptedShard:
    """Answers request r's n-th generated token with script[r][n]; records, as each step call starts, how many
    tokens the clients had received (`received` is filled by the test's consumers)."""

    def __init__(self, script: dict[int, list[int]], received: dict[int, list[int]]) -> None:
        self.script, self.received = script, received
        self.generated: dict[int, int] = {}
        self.received_at_call: list[int] = []
        self.filtered: list[int] = []

    async def step(self, items: list[StepItem], is_prefill: bool) -> list[Generation]:
        self.received_at_call.append(sum(len(tokens) for tokens in self.received.values()))
        await asyncio.sleep(0.01)  # the forward pass: the loop delivers meanwhile
        generations = []
        for item in items:
            if item.sample:
                index = self.generated.get(item.request_id, 0)
                self.generated[item.request_id] = index + 1
                token_id = self.script[item.request_id][index]
                generations.append(Generation(request_id=item.request_id, token=Token(id=token_id, logprob=-1.0)))
        return generations

    async def filter(self, request_ids: list[int]) -> None:
        self.filtered.extend(request_ids)

    async def close(self) -> None:
        return None


def _run(tiny_llama_dir: Path, stops: list[str], num_tokens: int, script_text: str
         ) -> tuple[list[list[TokenEvent]], ScriptedShard, list[int], list[int]]:
    """Two identical requests through the loop: their events, the shard, the script's ids, and the request ids
    the scheduler has finished but not yet told the shard to forget (sent with the next step)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    script_ids = tokenizer(script_text, add_special_tokens=False)["input_ids"]
    received: dict[int, list[int]] = {}
    shard = ScriptedShard({1: script_ids, 2: script_ids}, received)
    config = SchedulerConfig(max_batch_prefill_tokens=64, max_batch_total_tokens=1024, max_batch_size=None,
                             waiting_served_ratio=0.3, max_waiting_tokens=20, block_size=16)
    batcher = Batcher(Scheduler(config, BlockManager(64, 16)), shard, tokenizer,  # type: ignore[arg-type]
                      eos_token_ids=frozenset())
    parameters = GenerateParameters(max_new_tokens=num_tokens, stop=stops, ignore_eos_token=True)
    request = validate(parameters, tokenizer("hello there")["input_ids"], LIMITS)

    async def consume(request_id: int, stream) -> list[TokenEvent]:  # type: ignore[no-untyped-def]
        events = []
        async for event in stream:
            received.setdefault(request_id, []).append(event.token.id)
            events.append(event)
        return events

    async def scenario() -> list[list[TokenEvent]]:
        loop = asyncio.create_task(batcher.run())
        try:
            submitted = [batcher.submit(request) for _ in range(2)]
            outputs = list(await asyncio.gather(*(consume(rid, stream) for rid, stream in submitted)))
            await asyncio.sleep(0.2)  # a step still in flight completes (its answers go nowhere)
            return outputs
        finally:
            loop.cancel()

    outputs = asyncio.run(scenario())
    assert not batcher.scheduler.has_work()
    return outputs, shard, script_ids, batcher.scheduler.take_finished_request_ids()


def test_a_step_is_sent_before_the_previous_steps_tokens_are_delivered(tiny_llama_dir: Path) -> None:
    outputs, shard, script_ids, _ = _run(tiny_llama_dir, [], 6, " one two three four five six seven eight nine")
    # Step k (0-based, one token per request each) starts when the tokens of steps < k-1 were delivered, i.e. the
    # previous step's tokens go out while step k runs.
    assert shard.received_at_call == [0, 0] + [2 * k for k in range(1, len(shard.received_at_call) - 1)]
    for events in outputs:
        assert [event.token.id for event in events] == script_ids[:6]
        assert [event.index for event in events] == list(range(6))
        assert events[-1].finished is not None and events[-1].finished.finish_reason == "length"
        assert all(event.finished is None for event in events[:-1])


def test_a_stop_sequence_found_with_the_next_step_in_flight_ends_the_request_at_the_match(
        tiny_llama_dir: Path) -> None:
    text = " alpha beta gamma delta epsilon zeta eta theta"
    outputs, shard, script_ids, unfiltered = _run(tiny_llama_dir, ["gamma"], 20, text)
    for events in outputs:
        finished = events[-1].finished
        assert finished is not None and finished.finish_reason == "stop_sequence"
        assert finished.generated_text.endswith("gamma") and "delta" not in finished.generated_text
        assert [event.token.id for event in events] == script_ids[:len(events)]
    # The step in flight when the stop was seen computed one more token for each request, which nobody received;
    # the shard forgets both with the next step.
    assert [shard.generated[request_id] for request_id in (1, 2)] == [len(outputs[0]) + 1] * 2
    assert sorted(unfiltered) == [1, 2]
