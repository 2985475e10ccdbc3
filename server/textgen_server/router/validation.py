"""Request validation: pure functions from a parsed request and its prompt ids to what the engine needs.

Messages follow TGI's wording where TGI has one, and always say the value given and the limit, so that a 422
tells the client what to change.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from textgen_server.protocol import SamplingParams
from textgen_server.router.schemas import GenerateParameters


class ValidationError(ValueError):
    """The request cannot be served as given; answered 422 with error_type "validation"."""


@dataclass(frozen=True)
class Limits:
    """The server-wide limits a request is checked against (from the launcher config and warmup)."""

    max_input_tokens: int
    max_total_tokens: int
    max_stop_sequences: int
    max_top_n_tokens: int
    kv_capacity_tokens: int        # the whole KV cache: num_blocks * block_size


@dataclass(frozen=True)
class ValidRequest:
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    stop_sequences: tuple[str, ...]
    details: bool
    decoder_input_details: bool
    return_full_text: bool
    report_seed: bool              # TGI reports the seed only for sampled requests
    ignore_eos: bool = False       # generate max_new_tokens even past EOS (benchmarks)


def validate(parameters: GenerateParameters, prompt_ids: list[int], limits: Limits,
             rng: random.Random | None = None) -> ValidRequest:
    """Checks every parameter against TGI's rules and the server limits; raises ValidationError."""
    _check_sampling(parameters, limits)
    max_new = _check_lengths(parameters.max_new_tokens, len(prompt_ids), limits)
    params = build_sampling_params(parameters, rng or random.Random())
    return ValidRequest(prompt_ids=list(prompt_ids), params=params, max_new_tokens=max_new,
                        stop_sequences=tuple(parameters.stop), details=parameters.details,
                        decoder_input_details=parameters.decoder_input_details,
                        return_full_text=bool(parameters.return_full_text), report_seed=params.do_sample,
                        ignore_eos=parameters.ignore_eos_token)


def build_sampling_params(parameters: GenerateParameters, rng: random.Random) -> SamplingParams:
    """Maps the HTTP parameters to the shard's; any warper (temperature, top-k/p, typical-p) implies sampling,
    as in TGI, and a sampled request without a seed gets a random one so its details can report it."""
    temperature = parameters.temperature if parameters.temperature is not None else 1.0
    top_k = parameters.top_k or 0
    top_p = parameters.top_p if parameters.top_p is not None else 1.0
    typical_p = parameters.typical_p if parameters.typical_p is not None else 1.0
    warpers = temperature != 1.0 or top_k != 0 or top_p < 1.0 or typical_p < 1.0
    do_sample = parameters.do_sample or warpers
    seed = parameters.seed if parameters.seed is not None else rng.getrandbits(63)
    return SamplingParams(
        temperature=temperature, top_k=top_k, top_p=top_p, typical_p=typical_p, do_sample=do_sample,
        seed=seed if do_sample else 0,
        repetition_penalty=parameters.repetition_penalty if parameters.repetition_penalty is not None else 1.0,
        frequency_penalty=parameters.frequency_penalty if parameters.frequency_penalty is not None else 0.0,
        top_n_tokens=parameters.top_n_tokens or 0)


def _check_sampling(p: GenerateParameters, limits: Limits) -> None:
    rules: list[tuple[bool, str]] = [
        (p.temperature is not None and p.temperature <= 0,
         f"`temperature` must be strictly positive, got {p.temperature}"),
        (p.repetition_penalty is not None and p.repetition_penalty <= 0,
         f"`repetition_penalty` must be strictly positive, got {p.repetition_penalty}"),
        (p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0,
         f"`frequency_penalty` must be >= -2.0 and <= 2.0, got {p.frequency_penalty}"),
        (p.top_p is not None and not 0.0 < p.top_p <= 1.0, f"`top_p` must be > 0.0 and <= 1.0, got {p.top_p}"),
        (p.typical_p is not None and not 0.0 < p.typical_p <= 1.0,
         f"`typical_p` must be > 0.0 and <= 1.0, got {p.typical_p}"),
        (p.top_k is not None and p.top_k < 0, f"`top_k` must be strictly positive, got {p.top_k}"),
        (p.seed is not None and not 0 <= p.seed < 2**64, f"`seed` must be between 0 and 2^64 - 1, got {p.seed}"),
        (len(p.stop) > limits.max_stop_sequences,
         f"`stop` supports up to {limits.max_stop_sequences} stop sequences, got {len(p.stop)}"),
        (any(s == "" for s in p.stop), "`stop` sequences must not be empty strings"),
        (p.top_n_tokens is not None and not 0 <= p.top_n_tokens <= limits.max_top_n_tokens,
         f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}, got {p.top_n_tokens}"),
    ]
    for failed, message in rules:
        if failed:
            raise ValidationError(message)


def _check_lengths(max_new_tokens: int | None, input_length: int, limits: Limits) -> int:
    if input_length == 0:
        raise ValidationError("`inputs` cannot be empty: send at least one token of text")
    if input_length > limits.max_input_tokens:
        raise ValidationError(f"`inputs` tokens must be <= {limits.max_input_tokens} (--max-input-tokens). "
                              f"Given: {input_length}; shorten the prompt")
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise ValidationError(f"`max_new_tokens` must be strictly positive, got {max_new_tokens}")
    max_new = max_new_tokens if max_new_tokens is not None else limits.max_total_tokens - input_length
    if input_length + max_new > limits.max_total_tokens:
        raise ValidationError(f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens} "
                              f"(--max-total-tokens). Given: {input_length} `inputs` tokens and {max_new} "
                              "`max_new_tokens`; lower max_new_tokens or shorten the prompt")
    if input_length + max_new > limits.kv_capacity_tokens:
        raise ValidationError(f"`inputs` tokens + `max_new_tokens` ({input_length} + {max_new}) exceed the whole "
                              f"KV cache of this server ({limits.kv_capacity_tokens} tokens); lower max_new_tokens, "
                              "shorten the prompt, or start the server with a larger --kv-cache-memory")
    return max_new
