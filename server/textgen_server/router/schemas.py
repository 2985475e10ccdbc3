"""TGI-compatible request and response bodies (pydantic). Field names and shapes follow TGI's router.

Later API work (OpenAI routes, grammar, best_of, truncate, ...) adds fields here; unknown request fields are
ignored as TGI does, so clients that send them still work.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["length", "eos_token", "stop_sequence"]


class GenerateParameters(BaseModel):
    """TGI's `parameters` object; None means "off" or "server default"."""

    model_config = ConfigDict(extra="ignore")

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
    # Not in TGI's HTTP API (its gRPC has it): generate max_new_tokens whatever EOS says; for benchmarks.
    ignore_eos_token: bool = False


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False


class Token(BaseModel):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class PrefillToken(BaseModel):
    id: int
    text: str
    logprob: float | None = None


class Details(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: list[PrefillToken] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)
    top_tokens: list[list[Token]] | None = None


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
    error: str
    error_type: str


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
    version: str
    sha: str | None = None
    docker_label: str | None = None
