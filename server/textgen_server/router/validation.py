"""Request validation: pure functions from a parsed request and its prompt ids to what the engine needs.

Messages follow TGI's wording where TGI has one, and always say the value given and the limit, so that a 422
tells the client what to change.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from textgen_server.protocol import SamplingParams, WatermarkParams
from textgen_server.grammar.compile import GrammarError
from textgen_server.grammar.service import GrammarService
from textgen_server.router.schemas import GenerateParameters


# The shard takes top_k as uint32 and scales as float32: beyond these bounds a value would overflow the message or
# become 0/inf on the device (NaN logits). Clamping changes nothing a client can see: top_k above the vocabulary
# is "off", and a temperature or penalty past 1e4 either way already makes the choice argmax or uniform.
MAX_TOP_K = 2**32 - 1
SCALE_BOUNDS = (1e-4, 1e4)


class ValidationError(ValueError):
    """The request cannot be served as given; answered 422 with error_type "validation"."""


@dataclass(frozen=True)
class Limits:
    """The server-wide limits a request is checked against, and settings it gets (launcher config, warmup)."""

    max_input_tokens: int
    max_total_tokens: int
    max_stop_sequences: int
    max_top_n_tokens: int
    kv_capacity_tokens: int        # the whole KV cache: num_blocks * block_size
    max_best_of: int = 2           # TGI's --max-best-of default
    max_client_batch_size: int = 4  # most prompts in one request (list prompts of /v1/completions)
    # Checks `grammar` objects against the tokenizer (textgen_server/grammar); None = --disable-grammar-support.
    grammar: GrammarService | None = None
    # --watermark-gamma / --watermark-delta, given to the requests that ask for `watermark: true`
    watermark: WatermarkParams = WatermarkParams()


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
    best_of: int = 1               # candidates to sample; the most likely one is returned


def validate(parameters: GenerateParameters, prompt_ids: list[int], limits: Limits,
             rng: random.Random | None = None) -> ValidRequest:
    """Checks every parameter against TGI's rules and the server limits; raises ValidationError.

    `prompt_ids` is the whole tokenized prompt; with `truncate` only its last `truncate` tokens are kept (TGI
    truncates on the left), and the length limits apply to what is kept."""
    _check_unsupported(parameters)
    _check_sampling(parameters, limits)
    best_of = _check_best_of(parameters, limits)
    kept_ids = _truncate(list(prompt_ids), parameters.truncate, limits)
    max_new = _check_lengths(parameters.max_new_tokens, len(kept_ids), limits)
    grammar = _check_grammar(parameters, limits)
    params = build_sampling_params(parameters, rng or random.Random(), limits.watermark)
    params = replace(params, grammar=grammar)
    return ValidRequest(prompt_ids=kept_ids, params=params, max_new_tokens=max_new,
                        stop_sequences=tuple(parameters.stop), details=parameters.details,
                        decoder_input_details=parameters.decoder_input_details,
                        return_full_text=bool(parameters.return_full_text), report_seed=params.do_sample,
                        ignore_eos=parameters.ignore_eos_token, best_of=best_of)


def build_candidates(request: ValidRequest, rng: random.Random) -> list[ValidRequest]:
    """The `best_of` requests to run: the first keeps the request's seed, the others draw their own so that the
    candidates differ (TGI seeds each one randomly)."""
    others = [replace(request, params=replace(request.params, seed=rng.getrandbits(63)))
              for _ in range(request.best_of - 1)]
    return [request, *others]


def uses_sampling(parameters: GenerateParameters) -> bool:
    """TGI's rule: do_sample, or any sampling parameter given at all (even a neutral value), means sampling."""
    given = (parameters.temperature, parameters.top_k, parameters.top_p, parameters.typical_p)
    return parameters.do_sample or any(value is not None for value in given)


def build_sampling_params(parameters: GenerateParameters, rng: random.Random,
                          watermark: WatermarkParams = WatermarkParams()) -> SamplingParams:
    """Maps the HTTP parameters to the shard's; any warper (temperature, top-k/p, typical-p) implies sampling,
    as in TGI, and a sampled request without a seed gets a random one so its details can report it.
    `watermark` is the server's setting, applied when the request asks for it."""
    temperature = parameters.temperature if parameters.temperature is not None else 1.0
    top_k = parameters.top_k or 0
    top_p = parameters.top_p if parameters.top_p is not None else 1.0
    typical_p = parameters.typical_p if parameters.typical_p is not None else 1.0
    warpers = temperature != 1.0 or top_k != 0 or top_p < 1.0 or typical_p < 1.0
    # best_of > 1 samples whenever TGI's rule says so (validated above), even with neutral warper values.
    do_sample = parameters.do_sample or warpers or (parameters.best_of or 1) > 1
    seed = parameters.seed if parameters.seed is not None else rng.getrandbits(63)
    return SamplingParams(
        temperature=_clamp_scale(temperature), top_k=min(top_k, MAX_TOP_K), top_p=top_p, typical_p=typical_p, do_sample=do_sample,
        seed=seed if do_sample else 0,
        repetition_penalty=_clamp_scale(parameters.repetition_penalty if parameters.repetition_penalty is not None
                                        else 1.0),
        frequency_penalty=parameters.frequency_penalty if parameters.frequency_penalty is not None else 0.0,
        top_n_tokens=parameters.top_n_tokens or 0, watermark=watermark if parameters.watermark else None)


def _clamp_scale(value: float) -> float:
    return min(max(value, SCALE_BOUNDS[0]), SCALE_BOUNDS[1])


def _check_unsupported(p: GenerateParameters) -> None:
    rules: list[tuple[bool, str]] = [
        (p.adapter_id is not None, f"`adapter_id` ({p.adapter_id!r}): LoRA adapters are not supported yet by this "
         "server; send the request without it"),
    ]
    _raise_first(rules)


def _check_grammar(p: GenerateParameters, limits: Limits) -> str:
    """The checked llguidance grammar text ("" without `grammar`); the route compiled it off the loop first."""
    if p.grammar is None:
        return ""
    if limits.grammar is None:
        raise ValidationError("`grammar` is not supported: this server runs with --disable-grammar-support "
                              "(DISABLE_GRAMMAR_SUPPORT); send the request without it")
    if p.ignore_eos_token:
        raise ValidationError("`grammar` cannot be combined with ignoring EOS: a complete grammar ends the "
                              "sequence with EOS; drop one of them")
    try:
        return limits.grammar.compile(p.grammar)
    except GrammarError as error:
        raise ValidationError(f"`grammar`: {error}") from None


def _check_sampling(p: GenerateParameters, limits: Limits) -> None:
    floats = {"temperature": p.temperature, "top_p": p.top_p, "typical_p": p.typical_p,
              "repetition_penalty": p.repetition_penalty, "frequency_penalty": p.frequency_penalty}
    # NaN slips through every comparison below (all false), so non-finite values are refused first.
    _raise_first([(value is not None and not math.isfinite(value), f"`{name}` must be a finite number, got {value}")
                  for name, value in floats.items()])
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
    _raise_first(rules)


def _check_best_of(p: GenerateParameters, limits: Limits) -> int:
    best_of = p.best_of if p.best_of is not None else 1
    rules: list[tuple[bool, str]] = [
        (not 0 < best_of <= limits.max_best_of,
         f"`best_of` must be > 0 and <= {limits.max_best_of} (--max-best-of). Given: {best_of}"),
        (best_of > 1 and not uses_sampling(p),
         "you must use sampling when `best_of` is > 1: set `do_sample` or a sampling parameter (temperature, "
         "top_k, top_p, typical_p)"),
        (best_of > 1 and p.seed is not None, "`seed` must not be set when `best_of` > 1: each candidate draws "
         "its own seed"),
    ]
    _raise_first(rules)
    return best_of


def _truncate(prompt_ids: list[int], truncate: int | None, limits: Limits) -> list[int]:
    if truncate is None:
        return prompt_ids
    if not 0 < truncate <= limits.max_input_tokens:
        raise ValidationError(f"`truncate` must be strictly positive and at most {limits.max_input_tokens} "
                              f"(--max-input-tokens). Given: {truncate}")
    return prompt_ids[-truncate:]


def _raise_first(rules: list[tuple[bool, str]]) -> None:
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
