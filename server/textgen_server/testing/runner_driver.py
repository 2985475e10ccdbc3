"""A minimal stand-in for the router that drives a ModelRunner with hand-built StepItems (shard tests, benches).

It is deliberately naive (first-come block allocation, a per-step prompt-token budget) and independent of the
engine package, so shard tests pin the runner's contract without depending on the scheduler.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from textgen_server.protocol import SamplingParams, StepItem

BLOCK_SIZE = 16


@dataclass
class DriverRequest:
    request_id: int
    prompt: list[int]
    max_new_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    generated: list[int] = field(default_factory=list)
    block_ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    needs_params: bool = True
    prefix_len: int = 0          # tokens of a reused cached prefix at admission

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.generated

    @property
    def done(self) -> bool:
        return len(self.generated) >= self.max_new_tokens


class Driver:
    """Feeds requests to a runner step by step; `chunk_budget` caps prompt tokens per step (chunked prefill)."""

    def __init__(self, runner, num_blocks: int, chunk_budget: int = 10_000) -> None:
        self.runner = runner
        self.free_blocks = list(range(num_blocks - 1, -1, -1))
        self.chunk_budget = chunk_budget
        self.active: dict[int, DriverRequest] = {}
        self.finished: dict[int, DriverRequest] = {}

    def admit(self, request: DriverRequest, shared_blocks: list[int] | None = None) -> None:
        """Start a request; `shared_blocks` are full blocks of an identical cached prefix (prefix-cache hit)."""
        request.block_ids = list(shared_blocks or [])
        request.num_computed = request.prefix_len = len(request.block_ids) * BLOCK_SIZE
        request.needs_params = True
        self.active[request.request_id] = request

    def preempt(self, request_id: int) -> DriverRequest:
        """Drop the request's blocks and shard state; it restarts from position 0 on its next admit."""
        request = self.active.pop(request_id)
        self.free_blocks.extend(reversed(request.block_ids))
        self.runner.filter([request_id])
        return request

    def step(self) -> None:
        budget = self.chunk_budget
        items = []
        for request in self.active.values():
            item, budget = self._next_item(request, budget)
            if item is not None:
                items.append(item)
        generations = self.runner.step(items)
        assert len(generations) == sum(item.sample for item in items)
        for item, generation in zip([i for i in items if i.sample], generations):
            assert generation.request_id == item.request_id
            self.active[item.request_id].generated.append(generation.token.id)
        for request in [r for r in self.active.values() if r.done]:
            self.finished[request.request_id] = self.active.pop(request.request_id)
            self.runner.filter([request.request_id])
            # blocks stay allocated: tests may reuse them as a cached prefix

    def run(self) -> dict[int, list[int]]:
        while self.active:
            self.step()
        return {rid: r.generated for rid, r in self.finished.items()}

    def _next_item(self, request: DriverRequest, budget: int) -> tuple[StepItem | None, int]:
        tokens = request.tokens
        pending = len(tokens) - request.num_computed
        count = pending if pending == 1 else min(pending, budget)
        if count <= 0:
            return None, budget
        start = request.num_computed
        self._allocate(request, start + count)
        sample = start + count == len(tokens)
        params = request.params if request.needs_params else None
        item = StepItem(
            request_id=request.request_id,
            token_ids=tokens[start : start + count],
            start_pos=start,
            block_ids=list(request.block_ids),
            sample=sample,
            params=params,
            prefix_token_ids=tokens[:start] if params is not None else [],
            num_prompt_tokens=len(request.prompt) if params is not None else 0,
        )
        request.num_computed += count
        request.needs_params = False
        return item, budget - (count if pending > 1 else 0)

    def _allocate(self, request: DriverRequest, num_tokens: int) -> None:
        while len(request.block_ids) * BLOCK_SIZE < num_tokens:
            request.block_ids.append(self.free_blocks.pop())
