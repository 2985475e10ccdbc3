"""Protocol dataclasses <-> protobuf messages, both directions, for the servicer and the router's client.

proto3 has no "unset" for scalars, so optional values travel as 0 (documented in shard.proto) and come back
as None here; the sampling parameters message uses field presence.
"""
from __future__ import annotations

from typing import Any

from textgen_server.pb import shard_pb2 as pb
from textgen_server.protocol import (
    Generation,
    ModelInfo,
    SamplingParams,
    StepItem,
    Token,
    WarmupResult,
    WarmupSpec,
    WatermarkParams,
)
from textgen_server.shard.errors import InvalidStepError


def model_info_to_pb(info: ModelInfo) -> pb.InfoResponse:
    return pb.InfoResponse(
        model_type=info.model_type,
        dtype=info.dtype,
        device_type=info.device_type,
        vocab_size=info.vocab_size,
        eos_token_ids=info.eos_token_ids,
        max_position_embeddings=info.max_position_embeddings,
        block_size=info.block_size,
        sliding_window=info.sliding_window or 0,
        num_shards=info.num_shards,
        rank=info.rank,
    )


def model_info_from_pb(message: pb.InfoResponse) -> ModelInfo:
    return ModelInfo(
        model_type=message.model_type,
        dtype=message.dtype,
        device_type=message.device_type,
        vocab_size=message.vocab_size,
        eos_token_ids=list(message.eos_token_ids),
        max_position_embeddings=message.max_position_embeddings,
        block_size=message.block_size,
        sliding_window=message.sliding_window or None,
        num_shards=message.num_shards,
        rank=message.rank,
    )


def warmup_spec_to_pb(spec: WarmupSpec) -> pb.WarmupRequest:
    return pb.WarmupRequest(
        max_input_tokens=spec.max_input_tokens,
        max_total_tokens=spec.max_total_tokens,
        max_prefill_tokens=spec.max_prefill_tokens,
        max_batch_size=spec.max_batch_size or 0,
        kv_cache_memory_bytes=spec.kv_cache_memory_bytes or 0,
        max_batch_total_tokens=spec.max_batch_total_tokens or 0,
    )


def warmup_spec_from_pb(message: pb.WarmupRequest) -> WarmupSpec:
    return WarmupSpec(
        max_input_tokens=message.max_input_tokens,
        max_total_tokens=message.max_total_tokens,
        max_prefill_tokens=message.max_prefill_tokens,
        max_batch_size=message.max_batch_size or None,
        kv_cache_memory_bytes=message.kv_cache_memory_bytes or None,
        max_batch_total_tokens=message.max_batch_total_tokens or None,
    )


def warmup_result_to_pb(result: WarmupResult) -> pb.WarmupResponse:
    return pb.WarmupResponse(
        num_blocks=result.num_blocks,
        block_size=result.block_size,
        max_supported_total_tokens=result.max_supported_total_tokens,
        duration_seconds=result.duration_seconds,
    )


def warmup_result_from_pb(message: pb.WarmupResponse) -> WarmupResult:
    return WarmupResult(
        num_blocks=message.num_blocks,
        block_size=message.block_size,
        max_supported_total_tokens=message.max_supported_total_tokens,
        duration_seconds=message.duration_seconds,
    )


def sampling_params_to_pb(params: SamplingParams) -> pb.SamplingParameters:
    return pb.SamplingParameters(
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
        typical_p=params.typical_p,
        do_sample=params.do_sample,
        seed=params.seed,
        repetition_penalty=params.repetition_penalty,
        frequency_penalty=params.frequency_penalty,
        top_n_tokens=params.top_n_tokens,
        watermark=(pb.Watermark(gamma=params.watermark.gamma, delta=params.watermark.delta)
                   if params.watermark is not None else None),
        grammar=params.grammar,
    )


def sampling_params_from_pb(message: pb.SamplingParameters) -> SamplingParams:
    return SamplingParams(
        temperature=message.temperature,
        top_k=message.top_k,
        top_p=message.top_p,
        typical_p=message.typical_p,
        do_sample=message.do_sample,
        seed=message.seed,
        repetition_penalty=message.repetition_penalty,
        frequency_penalty=message.frequency_penalty,
        top_n_tokens=message.top_n_tokens,
        watermark=(WatermarkParams(gamma=message.watermark.gamma, delta=message.watermark.delta)
                   if message.HasField("watermark") else None),
        grammar=message.grammar,
    )


def step_request_to_pb(items: list[StepItem]) -> pb.StepRequest:
    """The step's items as columns (shard.proto's StepRequest): one message, no object per item."""
    token_ids: list[int] = []
    block_ids: list[int] = []
    starts = []
    for index, item in enumerate(items):
        token_ids += item.token_ids
        block_ids += item.block_ids
        if item.params is not None:
            starts.append(pb.ItemStart(index=index, parameters=sampling_params_to_pb(item.params),
                                       prefix_token_ids=item.prefix_token_ids,
                                       num_prompt_tokens=item.num_prompt_tokens))
    return pb.StepRequest(
        request_ids=[item.request_id for item in items],
        num_tokens=[len(item.token_ids) for item in items],
        token_ids=token_ids,
        start_pos=[item.start_pos for item in items],
        num_blocks=[len(item.block_ids) for item in items],
        block_ids=block_ids,
        sample=[item.sample for item in items],
        prefill_logprobs=[item.prefill_logprobs for item in items],
        num_speculative=[item.num_speculative for item in items],
        starts=starts,
    )


def step_items_from_pb(message: pb.StepRequest) -> list[StepItem]:
    """The StepItems of a columnar StepRequest; InvalidStepError when its columns disagree."""
    request_ids = list(message.request_ids)
    columns = (list(message.num_tokens), list(message.start_pos), list(message.num_blocks), list(message.sample),
               list(message.prefill_logprobs), list(message.num_speculative))
    num_tokens, start_pos, num_blocks, sample, prefill_logprobs, num_speculative = columns
    token_ids, block_ids = list(message.token_ids), list(message.block_ids)
    _check_columns(len(request_ids), columns, sum(num_tokens), len(token_ids), sum(num_blocks), len(block_ids))
    starts = {start.index: start for start in message.starts}
    if len(starts) != len(message.starts) or any(index >= len(request_ids) for index in starts):
        raise InvalidStepError(f"StepRequest.starts: indexes {[s.index for s in message.starts]} must be distinct "
                               f"item positions below {len(request_ids)}")
    items = []
    token_at = block_at = 0
    for index, request_id in enumerate(request_ids):
        tokens = token_ids[token_at:token_at + num_tokens[index]]
        blocks = block_ids[block_at:block_at + num_blocks[index]]
        token_at += num_tokens[index]
        block_at += num_blocks[index]
        start = starts.get(index)
        if start is None:
            items.append(StepItem(request_id, tokens, start_pos[index], blocks, sample[index],
                                  prefill_logprobs=prefill_logprobs[index], num_speculative=num_speculative[index]))
        else:
            items.append(StepItem(request_id, tokens, start_pos[index], blocks, sample[index],
                                  params=sampling_params_from_pb(start.parameters),
                                  prefix_token_ids=list(start.prefix_token_ids),
                                  num_prompt_tokens=start.num_prompt_tokens, prefill_logprobs=prefill_logprobs[index],
                                  num_speculative=num_speculative[index]))
    return items


def _check_columns(num_items: int, columns: tuple[list[Any], ...], tokens_needed: int, num_token_ids: int,
                   blocks_needed: int, num_block_ids: int) -> None:
    names = ("num_tokens", "start_pos", "num_blocks", "sample", "prefill_logprobs", "num_speculative")
    wrong = [f"{name} has {len(column)}" for name, column in zip(names, columns) if len(column) != num_items]
    if tokens_needed != num_token_ids:
        wrong.append(f"num_tokens sum to {tokens_needed} but token_ids has {num_token_ids}")
    if blocks_needed != num_block_ids:
        wrong.append(f"num_blocks sum to {blocks_needed} but block_ids has {num_block_ids}")
    if wrong:
        raise InvalidStepError(f"StepRequest columns disagree ({num_items} request_ids): {'; '.join(wrong)}")


def _token_to_pb(token: Token) -> pb.Token:
    return pb.Token(id=token.id, logprob=token.logprob)


def _token_from_pb(message: pb.Token) -> Token:
    return Token(id=message.id, logprob=message.logprob)


def step_response_to_pb(generations: list[Generation], forward_ns: int = 0) -> pb.StepResponse:
    """Generations as columns (shard.proto's StepResponse); extras only for those that carry any."""
    extras = [pb.GenerationExtras(index=index, top_tokens=[_token_to_pb(t) for t in g.top_tokens],
                                  prefill_logprobs=g.prefill_logprobs, speculative_ids=g.speculative_ids)
              for index, g in enumerate(generations) if g.top_tokens or g.prefill_logprobs or g.speculative_ids]
    return pb.StepResponse(request_ids=[g.request_id for g in generations],
                           token_ids=[g.token.id for g in generations],
                           logprobs=[g.token.logprob for g in generations],
                           extras=extras, forward_ns=forward_ns)


def generations_from_pb(message: pb.StepResponse) -> list[Generation]:
    request_ids, token_ids, logprobs = list(message.request_ids), list(message.token_ids), list(message.logprobs)
    if not len(request_ids) == len(token_ids) == len(logprobs):
        raise ValueError(f"StepResponse columns disagree: {len(request_ids)} request_ids, {len(token_ids)} "
                         f"token_ids, {len(logprobs)} logprobs")
    generations = [Generation(request_id, Token(token_id, logprob))
                   for request_id, token_id, logprob in zip(request_ids, token_ids, logprobs)]
    for extra in message.extras:
        plain = generations[extra.index]
        generations[extra.index] = Generation(plain.request_id, plain.token,
                                              top_tokens=[_token_from_pb(t) for t in extra.top_tokens],
                                              prefill_logprobs=list(extra.prefill_logprobs),
                                              speculative_ids=list(extra.speculative_ids))
    return generations
