"""OpenAI request fields -> TGI `GenerateParameters`, one per choice (pure; no I/O).

OpenAI semantics kept: `temperature` defaults to 1.0 (sampling) and 0 means greedy; `n` choices are `n`
requests with distinct seeds (`seed`, `seed + 1`, ...); `stop` may be a string; /v1/completions' `max_tokens`
defaults to 16. `frequency_penalty` is passed to TGI's frequency penalty (same range, -2..2; TGI scales it by the
token's share of the output rather than its raw count). Fields we cannot honour get a 422 naming the field.
"""
from __future__ import annotations

import math
import random

from textgen_server.router.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest
from textgen_server.router.schemas import GenerateParameters
from textgen_server.router.validation import ValidationError

COMPLETIONS_DEFAULT_MAX_TOKENS = 16   # OpenAI's default for /v1/completions
MAX_TOP_LOGPROBS = 20                 # OpenAI's bound; --max-top-n-tokens may be lower
SEED_MODULUS = 2**64
_FOREIGN_GRAMMAR_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs",
                           "grammar")

# TGI's field names in validation messages -> the OpenAI names the client actually sent.
_OPENAI_NAMES = (("`max_new_tokens`", "`max_tokens`"), ("`inputs` tokens", "prompt tokens"),
                 ("`inputs`", "the prompt"), ("`top_n_tokens`", "the number of top logprobs"))


def openai_message(message: str) -> str:
    """Rewrites a TGI-worded validation message with the OpenAI field names."""
    for tgi_name, openai_name in _OPENAI_NAMES:
        message = message.replace(tgi_name, openai_name)
    return message


def stop_sequences(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def check_sampling_request(request: SamplingRequest) -> None:
    """The checks both routes share; raises ValidationError naming the field, the value and the fix."""
    temperature = request.temperature
    rules: list[tuple[bool, str]] = [
        (temperature is not None and not 0.0 <= temperature <= 2.0,
         f"`temperature` must be >= 0 and <= 2 (0 means greedy), got {temperature}"),
        (request.n < 1, f"`n` must be at least 1, got {request.n}"),
        (request.presence_penalty is not None and request.presence_penalty != 0.0,
         f"`presence_penalty` is not supported yet (got {request.presence_penalty}); omit it or send 0, "
         "or use `frequency_penalty`"),
        (bool(request.logit_bias), "`logit_bias` is not supported yet; omit it"),
    ]
    for failed, message in rules:
        if failed:
            raise ValidationError(message)
    for name in _FOREIGN_GRAMMAR_FIELDS:
        if getattr(request, name) is not None:
            raise ValidationError(f"`{name}` (another server's constrained decoding) is not supported on the OpenAI "
                                  "routes; use `response_format` (json_object or json_schema) on "
                                  "/v1/chat/completions, or TGI's `grammar` on /generate")


def check_chat_request(request: ChatCompletionRequest, max_top_n_tokens: int) -> None:
    check_sampling_request(request)
    top = request.top_logprobs
    if top is not None and not request.logprobs and top > 0:
        raise ValidationError("`top_logprobs` needs `logprobs: true`; set both, or drop `top_logprobs`")
    if top is not None and not 0 <= top <= min(MAX_TOP_LOGPROBS, max_top_n_tokens):
        raise ValidationError(f"`top_logprobs` must be >= 0 and <= {min(MAX_TOP_LOGPROBS, max_top_n_tokens)} "
                              f"(--max-top-n-tokens), got {top}")
    _check_max_tokens(request.max_completion_tokens, "max_completion_tokens")
    _check_max_tokens(request.max_tokens, "max_tokens")


def check_completion_request(request: CompletionRequest, max_top_n_tokens: int) -> None:
    check_sampling_request(request)
    if isinstance(request.prompt, list) and not request.prompt:
        raise ValidationError("`prompt` is an empty list; send a string or a list of at least one string")
    if request.logprobs is not None and not 0 <= request.logprobs <= max_top_n_tokens:
        raise ValidationError(f"`logprobs` must be >= 0 and <= {max_top_n_tokens} (--max-top-n-tokens), "
                              f"got {request.logprobs}")
    if request.echo and request.logprobs is not None:
        raise ValidationError("`echo` with `logprobs` is not supported yet (prompt logprobs are not computed); "
                              "drop one of them")
    if request.suffix:
        raise ValidationError("`suffix` (insertion) is not supported; omit it")
    if request.best_of is not None and request.best_of != 1:
        raise ValidationError(f"`best_of` {request.best_of} is not supported; omit it (use `n` for several "
                              "choices)")
    _check_max_tokens(request.max_tokens, "max_tokens")


def chat_max_tokens(request: ChatCompletionRequest) -> int | None:
    """None: as many as --max-total-tokens leaves after the prompt."""
    return request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens


def completion_max_tokens(request: CompletionRequest) -> int:
    return request.max_tokens if request.max_tokens is not None else COMPLETIONS_DEFAULT_MAX_TOKENS


def build_choice_parameters(request: SamplingRequest, max_new_tokens: int | None, top_n_tokens: int | None,
                            rng: random.Random) -> list[GenerateParameters]:
    """One TGI parameter set per choice; sampled choices get seeds `seed`, `seed + 1`, ... (drawn when absent)."""
    greedy = request.temperature == 0.0
    base_seed = request.seed if request.seed is not None else rng.getrandbits(63)
    return [GenerateParameters(
        max_new_tokens=max_new_tokens, do_sample=not greedy,
        temperature=None if greedy else request.temperature,
        # Greedy wins over nucleus sampling: TGI would treat top_p < 1 as "sample".
        top_p=None if greedy else request.top_p,
        frequency_penalty=request.frequency_penalty or None, seed=None if greedy else _choice_seed(base_seed, index),
        stop=stop_sequences(request.stop), top_n_tokens=top_n_tokens, ignore_eos_token=request.ignore_eos,
    ) for index in range(request.n)]


def _choice_seed(base_seed: int, index: int) -> int:
    # A negative or overlong seed is left as is so that validation names it; only in-range seeds are offset.
    if not 0 <= base_seed < SEED_MODULUS:
        return base_seed
    return (base_seed + index) % SEED_MODULUS


def _check_max_tokens(value: int | None, name: str) -> None:
    if value is not None and value <= 0:
        raise ValidationError(f"`{name}` must be at least 1, got {value}")


def finite_logprob(logprob: float) -> float:
    """JSON has no -inf: tokens masked out by top_p report -9999.0, as vLLM does."""
    return logprob if math.isfinite(logprob) else -9999.0
