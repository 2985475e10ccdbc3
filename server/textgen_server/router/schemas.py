"""TGI-compatible request and response bodies (pydantic). Field names and shapes follow TGI's router.

Unknown request fields with a value are refused with a 422 naming them (strict_body.py; TGI drops them, which
answers a typo such as `max_new_token` with output the client did not ask for); null ones are accepted. Value ranges are checked in
`validation` rather than here, so that every out-of-range value gets TGI's wording and the limit that applies.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from textgen_server.router.strict_body import StrictBody

FinishReason = Literal["length", "eos_token", "stop_sequence"]


class GenerateParameters(StrictBody):
    """TGI's `parameters` object; None means "off" or "server default"."""

    best_of: int | None = None                 # n sampled sequences, the most likely one is returned
    max_new_tokens: int | None = None          # None: up to --max-total-tokens minus the prompt
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    details: bool = False
    decoder_input_details: bool = False
    top_n_tokens: int | None = None
    return_full_text: bool | None = None
    truncate: int | None = None                # keep only the last `truncate` prompt tokens
    watermark: bool = False                    # green-list watermark (--watermark-gamma/-delta)
    grammar: dict[str, Any] | None = None      # {"type": "json" | "regex", "value": ...} (textgen_server/grammar)
    adapter_id: str | None = None              # LoRA adapters: not supported yet, 422 when set
    # Not in TGI's HTTP API (its gRPC has it): generate max_new_tokens whatever EOS says; for benchmarks.
    ignore_eos_token: bool = False


class GenerateRequest(StrictBody):

    inputs: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False   # POST /: which answer; /generate(_stream): when sent, it must match the route


class Token(BaseModel):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False

    @field_validator("logprob")
    @classmethod
    def _finite_or_null(cls, value: float | None) -> float | None:
        # A masked alternative (grammar, top-k/p) has logprob -inf, which JSON cannot carry: null, as TGI writes it.
        return value if value is None or math.isfinite(value) else None


class PrefillToken(BaseModel):
    id: int
    text: str
    logprob: float | None = None


class BestOfSequence(BaseModel):
    """One of the `best_of` candidates that was not returned (TGI's `details.best_of_sequences`)."""

    generated_text: str
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: list[PrefillToken] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)
    top_tokens: list[list[Token]] = Field(default_factory=list)


class Details(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: list[PrefillToken] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)
    top_tokens: list[list[Token]] | None = None
    best_of_sequences: list[BestOfSequence] | None = None


class GenerateResponse(BaseModel):
    generated_text: str
    details: Details | None = None


class StreamDetails(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    input_length: int


class StreamResponse(BaseModel):
    index: int
    token: Token
    top_tokens: list[Token] = Field(default_factory=list)
    generated_text: str | None = None
    details: StreamDetails | None = None


class ErrorResponse(BaseModel):
    """Every error body: TGI's {"error", "error_type"}."""

    error: str
    error_type: str


class SimpleToken(BaseModel):
    """One prompt token of POST /tokenize: its id, text and character span in `inputs`."""

    id: int
    text: str
    start: int
    stop: int


class Info(BaseModel):
    """GET /info, TGI's field names."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_device_type: str
    model_pipeline_tag: str | None = "text-generation"
    max_concurrent_requests: int
    max_best_of: int = 1
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    max_batch_prefill_tokens: int
    waiting_served_ratio: float
    max_waiting_tokens: int
    max_batch_size: int | None
    validation_workers: int = 1
    max_client_batch_size: int = 1
    router: str = "textgen-router"
    num_shard: int = 1  # an extension: the shard processes (tensor-parallel ranks) serving the model
    speculate: int = 0  # TGI's --speculate: candidate tokens verified per decode step (0 = off)
    speculation: str = "off"  # an extension: how candidates are proposed, "off", "ngram" or "medusa"
    version: str
    sha: str | None = None
    docker_label: str | None = None
