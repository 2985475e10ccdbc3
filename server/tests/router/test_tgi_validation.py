"""TGI's newer request rules, table-driven: best_of, truncate, non-finite floats, unsupported features; and the
best_of ranking (sum of logprobs) with its best_of_sequences body."""
from __future__ import annotations

import random

import pytest

from textgen_server.router.responses import Candidate, build_generate_response, dump_generate_response, pick_best
from textgen_server.router.schemas import GenerateParameters, Token
from textgen_server.router.stream import Finished
from textgen_server.router.validation import Limits, ValidationError, build_candidates, validate

LIMITS = Limits(max_input_tokens=10, max_total_tokens=20, max_stop_sequences=2, max_top_n_tokens=5,
                kv_capacity_tokens=64, max_best_of=3)


@pytest.mark.parametrize(("parameters", "message"), [
    ({"temperature": float("nan")}, "`temperature` must be a finite number, got nan"),
    ({"top_p": float("inf")}, "`top_p` must be a finite number, got inf"),
    ({"repetition_penalty": float("-inf")}, "`repetition_penalty` must be a finite number"),
    ({"best_of": 0}, "`best_of` must be > 0 and <= 3 (--max-best-of). Given: 0"),
    ({"best_of": 4, "do_sample": True}, "Given: 4"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 2, "top_k": 5, "seed": 3}, "`seed` must not be set when `best_of` > 1"),
    ({"truncate": 0}, "`truncate` must be strictly positive and at most 10 (--max-input-tokens). Given: 0"),
    ({"truncate": 11}, "Given: 11"),
    # Limits without a grammar checker = --disable-grammar-support
    ({"grammar": {"type": "regex", "value": "a+"}}, "`grammar` is not supported: this server runs with --disable-grammar-support"),
    ({"adapter_id": "lora-1"}, "LoRA adapters are not supported yet"),
])
def test_rejections_say_what_and_how_much(parameters: dict, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate(GenerateParameters(**parameters), [1, 2, 3], LIMITS)
    assert message in str(raised.value)


def test_truncate_keeps_the_last_tokens_and_limits_apply_after_it() -> None:
    valid = validate(GenerateParameters(truncate=4, max_new_tokens=2), list(range(15)), LIMITS)
    assert valid.prompt_ids == [11, 12, 13, 14] and valid.max_new_tokens == 2
    with pytest.raises(ValidationError, match="must be <= 10"):
        validate(GenerateParameters(max_new_tokens=2), list(range(15)), LIMITS)


def test_best_of_with_a_neutral_sampling_parameter_samples_and_candidates_get_distinct_seeds() -> None:
    valid = validate(GenerateParameters(best_of=3, temperature=1.0, max_new_tokens=2), [1, 2], LIMITS,
                     random.Random(0))
    assert valid.best_of == 3 and valid.params.do_sample and valid.report_seed
    candidates = build_candidates(valid, random.Random(1))
    assert candidates[0] == valid and len({c.params.seed for c in candidates}) == 3
    assert {c.prompt_ids == valid.prompt_ids for c in candidates} == {True}


def _candidate(seed: int, logprobs: list[float], details: bool = True) -> Candidate:
    request = validate(GenerateParameters(best_of=2, do_sample=True, details=details, max_new_tokens=2), [1], LIMITS)
    request = build_candidates(request, random.Random(seed))[-1]
    tokens = [Token(id=i, text=f"t{i}", logprob=lp) for i, lp in enumerate(logprobs)]
    return Candidate(request, Finished("length", f"text{seed}", len(tokens)), tokens, [[] for _ in tokens])


def test_the_candidate_with_the_highest_logprob_sum_wins_and_others_become_best_of_sequences() -> None:
    low, high = _candidate(1, [-1.0, -2.0]), _candidate(2, [-0.5, -0.5])
    best, others = pick_best([low, high])
    assert best is high and others == [low]
    body = dump_generate_response(build_generate_response(best, others, "in", []))
    assert body["generated_text"] == "text2"
    sequence = body["details"]["best_of_sequences"][0]
    assert sequence["generated_text"] == "text1" and sequence["seed"] == low.request.params.seed
    assert sequence["tokens"][1]["logprob"] == -2.0 and sequence["top_tokens"] == []


def test_no_best_of_sequences_key_without_best_of_or_without_details() -> None:
    single = dump_generate_response(build_generate_response(_candidate(1, [-1.0]), [], "in", []))
    assert "best_of_sequences" not in single["details"]
    hidden = build_generate_response(_candidate(1, [-1.0], details=False), [_candidate(2, [-3.0])], "in", [])
    assert dump_generate_response(hidden) == {"generated_text": "text1"}


@pytest.mark.parametrize(("parameters", "field", "sent"), [
    ({"top_k": 2**40}, "top_k", 2**32 - 1),
    ({"temperature": 1e-300}, "temperature", 1e-4),
    ({"temperature": 1e300}, "temperature", 1e4),
    ({"repetition_penalty": 1e-300}, "repetition_penalty", 1e-4),
    ({"temperature": 0.7, "top_k": 40}, "temperature", 0.7),
])
def test_extreme_values_are_clamped_to_what_the_shard_can_represent(parameters: dict, field: str,
                                                                     sent: float) -> None:
    valid = validate(GenerateParameters(max_new_tokens=2, **parameters), [1, 2], LIMITS)
    assert getattr(valid.params, field) == sent
