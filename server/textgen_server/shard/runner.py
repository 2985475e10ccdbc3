"""ModelRunner: the model, its paged KV cache and the per-request sampling state of one shard.

The router sends StepItems (which tokens to compute, at which positions, in which blocks); the runner runs one
forward pass over all of them as a flattened ragged batch, computes logits only where a token is sampled, and
returns one Generation per sampling item, in item order.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from textgen_server.models.attention import (
    Kernel, PagedDecodeKernel, PagedPrefillKernel, StepContext, select_kernel, select_paged_decode, select_paged_prefill)
from textgen_server.models.attention_metadata import AttentionMetadata, build_attention_metadata, is_decode_item
from textgen_server.models.decode_rows import DecodeRows, StepRows
from textgen_server.models.kv_cache import BLOCK_SIZE, PagedKVCache
from textgen_server.models.loading import LoadedModel, load_model
from textgen_server.protocol import Generation, ModelInfo, SamplingParams, StepItem, WarmupResult, WarmupSpec
from textgen_server.sampling import RequestState, sample_batch
from textgen_server.sampling.grammar import GrammarFactory, cut_candidates
from textgen_server.shard.cuda_graphs import Capture, DecodeGraphs, cuda_capture
from textgen_server.shard.errors import CapacityError, InvalidStepError, NotReadyError
from textgen_server.shard.prompt_logprobs import PromptLogprobs, accumulate
from textgen_server.shard.verify import accept, expand_rows
from textgen_server.speculation.adaptive import AcceptanceTracker, StepCosts
from textgen_server.speculation.proposer import Proposer, build_proposer
from textgen_server.shard.verify_cost import measure_step_costs
from textgen_server.shard.warmup import (DEFAULT_CPU_KV_CACHE_BYTES, kv_bytes_from_free_memory, plan_num_blocks,
                                         plan_warmup_prompts, warmup_num_blocks)

# (free bytes, total bytes) of the shard's device, e.g. torch.cuda.mem_get_info.
MemoryProbe = Callable[[], tuple[int, int]]

logger = logging.getLogger(__name__)


class ModelRunner:
    """Runs steps for one shard. Not thread-safe: the servicer serialises calls."""

    # Decode attention over dense per-request rows on the CPU (models/decode_rows.py) instead of gathering the
    # batch's blocks every step. Static-shape runners pad batches with rows of their own and keep the gather.
    DENSE_DECODE_ROWS = True

    def __init__(
        self,
        model_path: str | Path,
        dtype: str = "auto",
        device: str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        default_kv_cache_bytes: int = DEFAULT_CPU_KV_CACHE_BYTES,
        speculate: int = 0,
        medusa_path: Path | None = None,
        speculation_costs: str = "measured",
        device_memory: MemoryProbe | None = None,
        memory_fraction: float = 1.0,
        cuda_graphs: tuple[int, ...] = (),
        graph_capture: Capture | None = None,
    ) -> None:
        self.default_kv_cache_bytes = default_kv_cache_bytes  # used when Warmup names no memory budget
        # With a probe (CUDA without --kv-cache-memory) the KV cache is sized from the device's free memory
        # after the warmup prefill instead, `memory_fraction` of the device being this process's (TGI).
        self.device_memory, self.memory_fraction = device_memory, memory_fraction
        self.speculation_costs = speculation_costs  # "measured" at warmup, or "flat" (--speculation-costs)
        self.device = torch.device(device)
        self.loaded: LoadedModel = load_model(model_path, dtype, self.device, rank, world_size)
        self.rank, self.world_size = rank, world_size
        self.kernel = self._select_kernel()
        # Decode and verify rows, and prompt chunks, read the paged cache in place with these kernels, where the
        # device has them (models/attention.py PAGED_DECODE, PAGED_PREFILL).
        self.paged_decode: PagedDecodeKernel | None = select_paged_decode(self.device.type)
        self.paged_prefill: PagedPrefillKernel | None = select_paged_prefill(self.device.type)
        # Decode steps replayed as CUDA graphs at these batch sizes, captured at warmup (shard/cuda_graphs.py).
        if cuda_graphs and graph_capture is None and self.device.type != "cuda":
            raise ValueError(f"--cuda-graphs {','.join(map(str, cuda_graphs))}: CUDA graphs are captured on CUDA "
                             f"devices only, not {self.device.type!r}; leave the flag out (or pass 0)")
        self.cuda_graphs = tuple(sorted(cuda_graphs))
        self.graph_capture = graph_capture
        self.graphs: DecodeGraphs | None = None
        self.cache: PagedKVCache | None = None
        self.decode_rows: DecodeRows | None = None
        self.states: dict[int, RequestState] = {}
        # Prompt logprobs of requests whose prompt is still arriving in chunks (decoder_input_details).
        self.prompt_logprobs: dict[int, PromptLogprobs] = {}
        # Grammar matchers of constrained requests (params.grammar); the tokenizer loads on the first one.
        self.grammars = GrammarFactory(model_path, self.loaded.config.vocab_size, self.loaded.eos_token_ids)
        config = self.loaded.config
        # Speculative decoding (--speculate): candidates proposed with each sampled token (Generation.speculative_ids).
        self.proposer: Proposer | None = build_proposer(speculate, medusa_path, config.hidden_size,
                                                        config.vocab_size, self.device, self.loaded.dtype)
        self.acceptance = AcceptanceTracker()  # per request: how many candidates it proposes (adaptive.py)

    def _select_kernel(self) -> Kernel:
        """The attention kernel of this device type (gaudi/runner.py's HpuRunner chooses its own)."""
        return select_kernel(self.device.type)

    def info(self) -> ModelInfo:
        """Model and device facts the router needs before warmup."""
        config = self.loaded.config
        return ModelInfo(
            model_type=config.model_type,
            dtype=str(self.loaded.dtype).removeprefix("torch."),
            device_type=self.device.type,
            vocab_size=config.vocab_size,
            eos_token_ids=self.loaded.eos_token_ids,
            max_position_embeddings=config.max_position_embeddings,
            block_size=BLOCK_SIZE,
            sliding_window=self.loaded.sliding_window,
            num_shards=self.world_size,
            rank=self.rank,
        )

    def warmup(self, spec: WarmupSpec) -> WarmupResult:
        """Allocate the KV cache, run the largest prefill the limits allow, then forget it."""
        started = time.perf_counter()
        shape = self.loaded.kv_cache_shape(BLOCK_SIZE)
        self.cache = self.decode_rows = self.graphs = None  # free the old cache before allocating the new one
        if self.device_memory is not None and not spec.kv_cache_memory_bytes:
            num_blocks = self._size_from_free_memory(spec)
        else:
            num_blocks = plan_num_blocks(spec, shape, self.default_kv_cache_bytes)
        # With graphs, one spare block takes the padding rows' keys and values.
        self.cache = PagedKVCache(shape, num_blocks, self.device, spare_blocks=1 if self.cuda_graphs else 0)
        if self.DENSE_DECODE_ROWS and self.device.type == "cpu" and not self.cuda_graphs:
            # At most as many bytes as the paged cache: the rows copy only what the decode batch holds there.
            self.decode_rows = DecodeRows(self.cache, max_bytes=num_blocks * shape.bytes_per_block())
        self.step(_warmup_items(plan_warmup_prompts(spec), num_blocks, self.loaded.config.vocab_size))
        self.clear()
        if self.proposer is not None and self.speculation_costs == "flat":
            # One table for every batch size (StepCosts uses the nearest), every shape one step's cost.
            self.acceptance.costs = StepCosts({1: (1.0,) * (self.proposer.num_tokens + 1)})
        elif self.proposer is not None:
            self._measure_verify_costs(self.cache, self.proposer.num_tokens + 1)
            self.clear()  # the timed steps' rows
        if self.cuda_graphs:
            self.graphs = self._capture_graphs(self.cache, spec)
        return WarmupResult(
            num_blocks=num_blocks,
            block_size=BLOCK_SIZE,
            max_supported_total_tokens=num_blocks * BLOCK_SIZE,
            duration_seconds=time.perf_counter() - started,
        )

    def _capture_graphs(self, cache: PagedKVCache, spec: WarmupSpec) -> DecodeGraphs:
        """Decode graphs for block tables as wide as the longest sequence the limits allow."""
        capture = self.graph_capture or cuda_capture()
        with torch.inference_mode():
            return DecodeGraphs(lambda metadata: self.run_model(metadata, cache), self.cuda_graphs,
                                table_width=-(-spec.max_total_tokens // BLOCK_SIZE), spare_slot=cache.spare_slot(),
                                device=self.device, capture=capture)

    def _size_from_free_memory(self, spec: WarmupSpec) -> int:
        """KV blocks that the device's free memory holds after the largest prefill ran in a cache just big enough
        for it (TGI's warmup): that prefill's peak stays reserved by the caching allocator, so what is left free is
        what the cache may take. Raises CapacityError with the flag to change when the prefill or the limits
        do not fit."""
        assert self.device_memory is not None
        shape = self.loaded.kv_cache_shape(BLOCK_SIZE)
        prompts = plan_warmup_prompts(spec)
        warm_blocks = warmup_num_blocks(prompts, BLOCK_SIZE)
        try:
            self.cache = PagedKVCache(shape, warm_blocks, self.device)
            self.step(_warmup_items(prompts, warm_blocks, self.loaded.config.vocab_size))
        except torch.OutOfMemoryError as error:
            raise CapacityError(
                f"not enough device memory to prefill {spec.max_prefill_tokens} tokens in one step ({error}); "
                "lower --max-batch-prefill-tokens (or --max-input-tokens), or free the device") from error
        finally:
            self.clear()
            self.cache = None
        free, total = self.device_memory()
        budget = kv_bytes_from_free_memory(free, total, self.memory_fraction) + warm_blocks * shape.bytes_per_block()
        try:
            num_blocks = plan_num_blocks(dataclasses.replace(spec, kv_cache_memory_bytes=budget), shape, budget)
        except CapacityError as error:
            raise CapacityError(f"{error} (the KV budget came from the device's free memory: {free} of {total} "
                                f"bytes free, --cuda-memory-fraction {self.memory_fraction})") from error
        logger.info("rank %d: KV cache sized from free device memory: %d of %d bytes free after the warmup "
                    "prefill, fraction %.2f -> %d blocks (%d tokens)", self.rank, free, total,
                    self.memory_fraction, num_blocks, num_blocks * BLOCK_SIZE)
        return num_blocks

    def _measure_verify_costs(self, cache: PagedKVCache, max_queries: int) -> None:
        """Time decode steps of 1..K+1 query tokens per row for the adaptive rule (shard/verify_cost.py)."""
        costs = measure_step_costs(self._timed_forward, cache, max_queries, self.device, self.world_size)
        self.acceptance.costs = costs
        for batch_size, seconds in costs.by_batch.items():
            logger.info("rank %d: decode step cost at batch %d, 1..%d query tokens per row: %s ms", self.rank,
                        batch_size, max_queries, " ".join(f"{1000 * s:.1f}" for s in seconds))

    def _timed_forward(self, metadata: AttentionMetadata, cache: PagedKVCache) -> torch.Tensor:
        """run_model for the warmup's timed verify steps, through the dense rows where serving uses them (rows
        keyed by batch row: the timed items' ids are 0..B-1, every row with the same number of queries)."""
        decode, rows = metadata.decode, self.decode_rows
        if rows is None or decode is None or decode.valid is not None:
            return self.run_model(metadata, cache)
        prepared = rows.prepare(list(range(decode.positions.shape[0])), decode.positions.tolist(),
                                decode.block_tables.tolist())
        return self.run_model(metadata, cache, None if prepared is None else (rows, prepared))

    def step(self, items: list[StepItem]) -> list[Generation]:
        """One forward pass over `items`; one Generation per item with sample=True, in item order."""
        cache = self._require_cache()
        if not items:
            return []
        self._check_blocks(items, cache.num_blocks)
        sampling_states = self._update_states(items)
        metadata = build_attention_metadata(items, cache.block_size, self.device)
        with torch.inference_mode():
            try:
                hidden = self._forward(items, metadata, cache)  # [1, T, hidden], the items' rows in order
            except BaseException:
                if self.decode_rows is not None:
                    self.decode_rows.clear()  # a step cut short may have appended to some rows only
                raise
            lm_head = self.loaded.model.get_output_embeddings()
            finished_prompts: dict[int, list[float]] = {}
            if any(item.prefill_logprobs for item in items):  # else the fast path: lm_head on sampling rows only
                finished_prompts = accumulate(items, hidden[0], lm_head, self.prompt_logprobs)
            if not sampling_states:
                return []
            # The lm_head runs only on the rows that sample, not on every prompt token.
            sample_hidden = hidden[0, metadata.sample_rows]  # [S, H], 1 + K rows per speculative item
            generations = self._sample(items, lm_head(sample_hidden), sample_hidden, sampling_states)
            if finished_prompts:
                generations = [_with_prompt_logprobs(g, finished_prompts) for g in generations]
            return generations

    def _forward(self, items: list[StepItem], metadata: AttentionMetadata, cache: PagedKVCache) -> torch.Tensor:
        """The model over the step's flattened batch (shard/static_runner.py pads it to static shapes here)."""
        if self.graphs is not None and (graph_size := self.graphs.graph_size(items)) is not None:
            return self.graphs.run(graph_size, metadata)
        return self.run_model(metadata, cache, self._decode_rows_for(items))

    def _decode_rows_for(self, items: list[StepItem]) -> tuple[DecodeRows, StepRows] | None:
        """This step's dense decode rows (its items, in order, are then the decode batch's rows)."""
        if self.decode_rows is None:
            return None
        if not items or not all(is_decode_item(item) for item in items):
            # Only pure decode steps: a step that also computes prompts is dominated by them, and in a burst of
            # arrivals every new request waits for it before its first token, while filling and growing rows
            # for requests that have just joined costs about one gather step. The rows of this step's requests
            # miss its keys; the next decode step fills them in from the paged cache.
            self.decode_rows.rewind({item.request_id: item.start_pos for item in items})
            return None
        step_rows = self.decode_rows.prepare(
            [item.request_id for item in items],
            [list(range(item.start_pos, item.start_pos + len(item.token_ids))) for item in items],
            [item.block_ids for item in items])
        return None if step_rows is None else (self.decode_rows, step_rows)

    def run_model(self, metadata: AttentionMetadata, cache: PagedKVCache,
                  rows: tuple[DecodeRows, StepRows] | None = None) -> torch.Tensor:
        """One forward pass of the base model over `metadata`'s tokens -> last hidden states [1, T, hidden]."""
        return self.loaded.model.base_model(
            input_ids=metadata.input_ids,
            position_ids=metadata.position_ids,
            use_cache=False,
            textgen_step=StepContext(metadata, cache, self.kernel, rows, self.paged_decode, self.paged_prefill),
        ).last_hidden_state

    def _sample(self, items: list[StepItem], logits: torch.Tensor, sample_hidden: torch.Tensor,
                states: list[RequestState]) -> list[Generation]:
        """Sample every row, keep each item's accepted tokens (shard/verify.py), attach the next candidates."""
        sampling_items = [item for item in items if item.sample]
        request_ids, row_states = expand_rows(sampling_items, states)
        kept, last_rows = accept(sampling_items, sample_batch(request_ids, logits, row_states))
        for item, state, group in zip(sampling_items, states, kept):
            state.history.extend(g.token.id for g in group[:-1])  # accepted candidates are now real tokens
            self.acceptance.update(item.request_id, item.num_speculative, len(group) - 1)
        if self.proposer is None:
            return [g for group in kept for g in group]
        histories = [[*state.history, group[-1].token.id] for state, group in zip(states, kept)]
        proposals = self.proposer.propose(histories, sample_hidden[last_rows])
        # The adaptive rule (speculation/adaptive.py): the candidates that pay for their share of the next step.
        limits = self.acceptance.limits([item.request_id for item in sampling_items], [len(c) for c in proposals])
        for i, (state, candidates, limit) in enumerate(zip(states, proposals, limits)):
            candidates = candidates[:limit]
            if state.grammar is not None:  # only candidates the grammar allows (sampling/grammar.py)
                candidates = cut_candidates(state.grammar, state, kept[i][-1].token.id, candidates)
            kept[i][-1] = dataclasses.replace(kept[i][-1], speculative_ids=candidates)
        return [g for group in kept for g in group]

    def filter(self, request_ids: list[int]) -> None:
        """Forget the state of finished, cancelled or preempted requests (unknown ids are ignored)."""
        for request_id in request_ids:
            self.states.pop(request_id, None)
            self.prompt_logprobs.pop(request_id, None)
            self.acceptance.forget(request_id)
        if self.decode_rows is not None:
            self.decode_rows.forget(request_ids)

    def clear(self) -> None:
        """Forget every request."""
        self.states.clear()
        self.prompt_logprobs.clear()
        self.acceptance.clear()
        if self.decode_rows is not None:
            self.decode_rows.clear()

    def _require_cache(self) -> PagedKVCache:
        if self.cache is None:
            raise NotReadyError("the KV cache is not allocated yet; call Warmup before Prefill/Decode")
        return self.cache

    def _update_states(self, items: list[StepItem]) -> list[RequestState]:
        """Start or extend each item's request state; return the states of sampling items, in order."""
        sampling_states = []
        for item in items:
            if item.params is not None:
                if self.decode_rows is not None:  # a readmission: its KV may have been recomputed
                    self.decode_rows.forget([item.request_id])
                self.states[item.request_id] = state = _new_state(item, item.params)
                if item.params.grammar:  # a readmission starts a fresh matcher: it replays the generated tokens
                    state.grammar = self.grammars.new_state(item.params.grammar)
                self.prompt_logprobs.pop(item.request_id, None)  # a readmission restarts them too
            elif item.request_id not in self.states:
                raise InvalidStepError(
                    f"request {item.request_id} has no state on this shard: the first item after (re)admission "
                    "must carry sampling parameters"
                )
            else:  # candidates join the history only once accepted (see _sample)
                num_tokens = len(item.token_ids) - item.num_speculative
                self.states[item.request_id].history.extend(item.token_ids[:num_tokens])
            if item.sample:
                sampling_states.append(self.states[item.request_id])
        return sampling_states

    @staticmethod
    def _check_blocks(items: list[StepItem], num_blocks: int) -> None:
        for item in items:
            bad = [b for b in item.block_ids if not 0 <= b < num_blocks]
            if bad:
                raise InvalidStepError(
                    f"request {item.request_id}: block ids {bad[:5]} are outside the KV cache's {num_blocks} "
                    "blocks; the router's BlockManager must use the num_blocks that Warmup returned"
                )


def _with_prompt_logprobs(generation: Generation, finished: dict[int, list[float]]) -> Generation:
    values = finished.get(generation.request_id)
    return generation if values is None else dataclasses.replace(generation, prefill_logprobs=values)


def _new_state(item: StepItem, params: SamplingParams) -> RequestState:
    history = [*item.prefix_token_ids, *item.token_ids]
    if len(item.prefix_token_ids) != item.start_pos:
        raise InvalidStepError(
            f"request {item.request_id}: an item with parameters at start_pos {item.start_pos} needs the "
            f"{item.start_pos} prefix token ids before it, got {len(item.prefix_token_ids)}"
        )
    # 0 means "not given": acceptable only when the whole prompt is in this item, which then is all prompt.
    if item.num_prompt_tokens == 0 and not item.sample:
        raise InvalidStepError(
            f"request {item.request_id}: an item with parameters that does not sample (a first prompt chunk) "
            "must set num_prompt_tokens"
        )
    num_prompt_tokens = item.num_prompt_tokens or len(history)
    return RequestState(params=params, num_prompt_tokens=num_prompt_tokens, history=history)


def _warmup_items(prompt_lengths: list[int], num_blocks: int, vocab_size: int) -> list[StepItem]:
    """Dummy greedy prompts filling consecutive blocks (the last ones trimmed if blocks run out)."""
    items, next_block = [], 0
    generator = torch.Generator().manual_seed(0)
    for request_id, length in enumerate(prompt_lengths):
        length = min(length, (num_blocks - next_block) * BLOCK_SIZE)
        if length <= 0:
            break
        blocks_needed = -(-length // BLOCK_SIZE)
        token_ids = torch.randint(0, vocab_size, (length,), generator=generator).tolist()
        block_ids = list(range(next_block, next_block + blocks_needed))
        next_block += blocks_needed
        items.append(StepItem(request_id, token_ids, 0, block_ids, True, SamplingParams(), [], length))
    return items
