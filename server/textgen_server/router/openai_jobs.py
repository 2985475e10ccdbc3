"""An OpenAI request as a job: its validated sub-requests (one per choice) and how to present their output.

`n` choices (times the prompts of a list-prompt completion) become that many independent requests in the
batcher; each is checked by TGI's `validate`, so the server limits apply to every choice. Raises
ValidationError (answered 422) with OpenAI field names.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from textgen_server.router.chat import encode_chat_prompt, render_chat_prompt
from textgen_server.grammar.tools import ToolPlan
from textgen_server.router.grammar_routes import response_format_grammar
from textgen_server.router.openai_params import (
    build_choice_parameters,
    chat_max_tokens,
    check_chat_request,
    check_completion_request,
    completion_max_tokens,
    openai_message,
    stop_sequences,
)
from textgen_server.router.openai_responses import ResponseMeta
from textgen_server.router.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest
from textgen_server.router.openai_tools import chat_tool_plan
from textgen_server.router.schemas import GenerateParameters
from textgen_server.router.validation import Limits, ValidationError, ValidRequest, validate


@dataclass(frozen=True)
class SubRequest:
    index: int                 # the choice's index in the response
    request: ValidRequest
    prefix: str = ""           # text placed before the output (the prompt, with `echo`)
    no_tool: ValidRequest | None = None   # tool_choice "auto": the answer without tools when the model picks no_tool


@dataclass(frozen=True)
class Job:
    chat: bool                 # chat.completion shapes, else text_completion
    meta: ResponseMeta
    subs: list[SubRequest]
    prompt_tokens: int         # usage: every prompt counted once, whatever `n`
    stops: tuple[str, ...]
    logprobs: bool
    include_usage: bool
    tools: ToolPlan | None = None   # chat with tools: each choice's output is a call (grammar/tools.py)
    no_tool_prompt_tokens: int = 0  # the prompt without tools, which no_tool choices are answered from


def build_chat_job(body: ChatCompletionRequest, tokenizer: Any, limits: Limits, meta: ResponseMeta,
                   max_sequences: int, rng: random.Random | None = None) -> Job:
    """Template -> prompt ids -> one validated request per choice."""
    check_chat_request(body, limits.max_top_n_tokens)
    _check_fan_out(body.n, 1, max_sequences)
    plan = chat_tool_plan(body)
    prompt_ids = encode_chat_prompt(tokenizer, render_chat_prompt(tokenizer, body.messages, plan, body.tool_prompt))
    top_n = (body.top_logprobs or 0) if body.logprobs else None
    grammar = plan.grammar if plan is not None else response_format_grammar(body.response_format)
    free = build_choice_parameters(body, chat_max_tokens(body), top_n, rng or random.Random())
    # As TGI, a choice that picks no_tool is generated again from the template without tools, with the same
    # parameters (seed included) and no grammar; validated now so that the switch cannot fail validation later.
    plain_ids = (encode_chat_prompt(tokenizer, render_chat_prompt(tokenizer, body.messages))
                 if plan is not None and plan.allows_text else None)
    subs = [SubRequest(index, _validate(p.model_copy(update={"grammar": grammar}), prompt_ids, limits),
                       no_tool=None if plain_ids is None else _validate(p, plain_ids, limits))
            for index, p in enumerate(free)]
    return Job(chat=True, meta=meta, subs=subs, prompt_tokens=len(prompt_ids), stops=_stops(body),
               logprobs=body.logprobs, include_usage=_include_usage(body), tools=plan,
               no_tool_prompt_tokens=len(plain_ids or []))


def build_completion_job(body: CompletionRequest, tokenizer: Any, limits: Limits, meta: ResponseMeta,
                         max_sequences: int, rng: random.Random | None = None) -> Job:
    """Each prompt gets `n` choices, indexed prompt-major as OpenAI does (prompt i, choice j -> i * n + j)."""
    check_completion_request(body, limits.max_top_n_tokens)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    max_prompts = limits.max_client_batch_size
    if len(prompts) > max_prompts:
        raise ValidationError(f"`prompt` has {len(prompts)} prompts; at most {max_prompts} are allowed in one "
                              "request (--max-client-batch-size); split the list over several requests")
    _check_fan_out(body.n, len(prompts), max_sequences)
    rng = rng or random.Random()
    subs, prompt_tokens = [], 0
    for prompt_index, prompt in enumerate(prompts):
        if not prompt:
            raise ValidationError(f"`prompt` {prompt_index} is empty; send at least one character of text")
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        prompt_tokens += len(prompt_ids)
        parameters = [p.model_copy(update={"repetition_penalty": body.repetition_penalty})
                      for p in build_choice_parameters(body, completion_max_tokens(body), body.logprobs, rng)]
        subs += [SubRequest(prompt_index * body.n + j, _validate(p, prompt_ids, limits),
                            prompt if body.echo else "") for j, p in enumerate(parameters)]
    return Job(chat=False, meta=meta, subs=subs, prompt_tokens=prompt_tokens, stops=_stops(body),
               logprobs=body.logprobs is not None, include_usage=_include_usage(body))


def _validate(parameters: GenerateParameters, prompt_ids: list[int], limits: Limits) -> ValidRequest:
    try:
        return validate(parameters, prompt_ids, limits)
    except ValidationError as error:
        raise ValidationError(openai_message(str(error))) from error


def _check_fan_out(n: int, num_prompts: int, max_sequences: int) -> None:
    # Each choice is a sequence in the batcher; more than --max-concurrent-requests could never be admitted.
    if n * num_prompts > max_sequences:
        raise ValidationError(f"`n` ({n}) x prompts ({num_prompts}) = {n * num_prompts} sequences, more than "
                              f"--max-concurrent-requests ({max_sequences}) allows at once; lower `n`")


def _stops(body: SamplingRequest) -> tuple[str, ...]:
    return tuple(stop_sequences(body.stop))


def _include_usage(body: SamplingRequest) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage
