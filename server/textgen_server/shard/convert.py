"""Protocol dataclasses <-> protobuf messages, both directions, for the servicer and the router's client.

proto3 has no "unset" for scalars, so optional values travel as 0 (documented in shard.proto) and come back
as None here; the sampling parameters message uses field presence.
"""
from __future__ import annotations

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


def step_item_to_pb(item: StepItem) -> pb.StepItem:
    message = pb.StepItem(
        request_id=item.request_id,
        token_ids=item.token_ids,
        start_pos=item.start_pos,
        block_ids=item.block_ids,
        sample=item.sample,
        prefix_token_ids=item.prefix_token_ids,
        num_prompt_tokens=item.num_prompt_tokens,
        prefill_logprobs=item.prefill_logprobs,
        num_speculative=item.num_speculative,
    )
    if item.params is not None:
        message.parameters.CopyFrom(sampling_params_to_pb(item.params))
    return message


def step_item_from_pb(message: pb.StepItem) -> StepItem:
    return StepItem(
        request_id=message.request_id,
        token_ids=list(message.token_ids),
        start_pos=message.start_pos,
        block_ids=list(message.block_ids),
        sample=message.sample,
        params=sampling_params_from_pb(message.parameters) if message.HasField("parameters") else None,
        prefix_token_ids=list(message.prefix_token_ids),
        num_prompt_tokens=message.num_prompt_tokens,
        prefill_logprobs=message.prefill_logprobs,
        num_speculative=message.num_speculative,
    )


def step_request_to_pb(items: list[StepItem]) -> pb.StepRequest:
    return pb.StepRequest(items=[step_item_to_pb(item) for item in items])


def step_items_from_pb(message: pb.StepRequest) -> list[StepItem]:
    return [step_item_from_pb(item) for item in message.items]


def _token_to_pb(token: Token) -> pb.Token:
    return pb.Token(id=token.id, logprob=token.logprob)


def _token_from_pb(message: pb.Token) -> Token:
    return Token(id=message.id, logprob=message.logprob)


def step_response_to_pb(generations: list[Generation], forward_ns: int = 0) -> pb.StepResponse:
    return pb.StepResponse(
        generations=[
            pb.Generation(
                request_id=g.request_id,
                token=_token_to_pb(g.token),
                top_tokens=[_token_to_pb(t) for t in g.top_tokens],
                prefill_logprobs=g.prefill_logprobs,
                speculative_ids=g.speculative_ids,
            )
            for g in generations
        ],
        forward_ns=forward_ns,
    )


def generations_from_pb(message: pb.StepResponse) -> list[Generation]:
    return [
        Generation(
            request_id=g.request_id,
            token=_token_from_pb(g.token),
            top_tokens=[_token_from_pb(t) for t in g.top_tokens],
            prefill_logprobs=list(g.prefill_logprobs),
            speculative_ids=list(g.speculative_ids),
        )
        for g in message.generations
    ]
