"""Grammar masks on a real ModelRunner (random-weight llama, seeded sampling at temperature 1): constrained rows
produce valid output, free rows in the same batch produce exactly what they produce alone, and a preempted
constrained request replays into the same tokens."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from grammar_cases import REGEXES, SCHEMAS
from transformers import AutoTokenizer

from textgen_server.grammar.compile import GrammarCompiler, build_ll_tokenizer, hf_tokenizer_json
from textgen_server.protocol import SamplingParams, WarmupSpec
from textgen_server.shard.runner import ModelRunner
from textgen_server.testing.runner_driver import Driver, DriverRequest

MAX_NEW = 120


@pytest.fixture(scope="module")
def runner(tiny_llama_dir: Path) -> ModelRunner:
    model = ModelRunner(tiny_llama_dir)
    model.warmup(WarmupSpec(256, 512, 512, kv_cache_memory_bytes=64 << 20))
    return model


@pytest.fixture(scope="module")
def compiled(runner: ModelRunner, tiny_llama_dir: Path) -> dict[str, str]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    compiler = GrammarCompiler(build_ll_tokenizer(hf_tokenizer_json(tokenizer), runner.loaded.config.vocab_size,
                                                  runner.loaded.eos_token_ids))
    grammars = {name: compiler.compile({"type": "json", "value": s}) for name, s in SCHEMAS.items()}
    grammars.update({rx: compiler.compile({"type": "regex", "value": rx}) for rx in REGEXES})
    return grammars


def _free(i: int) -> SamplingParams:
    return SamplingParams(do_sample=True, seed=1000 + i, top_k=50 if i % 2 else 0)


def _run(runner: ModelRunner, requests: list[DriverRequest]) -> dict[int, list[int]]:
    driver = Driver(runner, 1024)
    for request in requests:
        driver.admit(request)
    return driver.run()


def _until_eos(tokens: list[int], eos: list[int]) -> list[int] | None:
    cut = next((k for k, token in enumerate(tokens) if token in eos), None)
    return None if cut is None else tokens[:cut]


def test_constrained_rows_validate_and_free_rows_are_unchanged(runner: ModelRunner, compiled: dict[str, str],
                                                              tiny_llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = tokenizer("The quick brown fox")["input_ids"]
    alone = _run(runner, [DriverRequest(i, prompt, 40, _free(i)) for i in range(4)])
    kinds: list[str] = [*SCHEMAS, *REGEXES] * 2
    constrained = [DriverRequest(100 + j, prompt, MAX_NEW, SamplingParams(do_sample=True, seed=j,
                                                                          grammar=compiled[kind]))
                   for j, kind in enumerate(kinds)]
    mixed = _run(runner, [*constrained[:4], *[DriverRequest(i, prompt, 40, _free(i)) for i in range(4)],
                          *constrained[4:]])
    assert {i: mixed[i] for i in range(4)} == alone
    eos, completed = runner.loaded.eos_token_ids, 0
    for j, kind in enumerate(kinds):
        output = _until_eos(mixed[100 + j], eos)
        if output is None:
            continue
        completed += 1
        text = tokenizer.decode(output)
        if kind in SCHEMAS:
            assert jsonschema_rs.validator_for(SCHEMAS[kind]).is_valid(json.loads(text)), text
        else:
            assert re.fullmatch(kind, text), (kind, text)
    assert completed >= len(kinds) * 2 // 3, f"only {completed} of {len(kinds)} finished within {MAX_NEW} tokens"


def test_preempted_constrained_request_replays_its_matcher(runner: ModelRunner, compiled: dict[str, str],
                                                           tiny_llama_dir: Path) -> None:
    prompt = AutoTokenizer.from_pretrained(tiny_llama_dir)("hello")["input_ids"]
    params = SamplingParams(do_sample=True, seed=7, grammar=compiled["order"])
    reference = _run(runner, [DriverRequest(1, prompt, 40, params)])[1]
    driver = Driver(runner, 1024)
    driver.admit(DriverRequest(1, prompt, 40, params))
    for _ in range(12):
        driver.step()
    request = driver.preempt(1)
    request.num_computed = 0
    driver.admit(request)  # readmission: params again, generated tokens re-fed as prefix of the prompt chunk
    assert driver.run()[1] == reference


def test_mask_forbids_every_token_outside_the_grammar(runner: ModelRunner, compiled: dict[str, str]) -> None:
    """One step of a regex grammar: every token with a finite logprob among the top ones is a valid start."""
    params = SamplingParams(do_sample=True, seed=3, top_n_tokens=5, grammar=compiled[r"(yes|no|maybe)"])
    driver = Driver(runner, 1024)
    driver.admit(DriverRequest(1, [1, 5, 9], 1, params))
    items_out: list[Any] = []
    original = runner.step

    def spy(items: Any) -> Any:
        generations = original(items)
        items_out.extend(generations)
        return generations

    runner.step = spy  # type: ignore[method-assign]
    try:
        driver.run()
    finally:
        runner.step = original  # type: ignore[method-assign]
    tokenizer_text = AutoTokenizer.from_pretrained(runner_model_path(runner))
    for top in items_out[0].top_tokens:
        text = tokenizer_text.decode([top.id])
        if top.logprob > float("-inf"):
            assert any(word.startswith(text) for word in ("yes", "no", "maybe")), text


def runner_model_path(runner: ModelRunner) -> Path:
    return Path(runner.grammars.model_path)


def test_constrained_requests_get_speculative_candidates(tiny_llama_dir: Path, compiled: dict[str, str]) -> None:
    """The joint point with speculative decoding: the proposer is asked for the grammar row too (its candidates are
    then cut to the grammar's valid prefix and each verify position is masked: tests/speculation/
    test_grammar_speculation.py), beside the free row."""
    speculative = ModelRunner(tiny_llama_dir, speculate=3)
    speculative.warmup(WarmupSpec(256, 512, 512, kv_cache_memory_bytes=16 << 20))
    assert speculative.proposer is not None
    asked: list[int] = []
    propose = speculative.proposer.propose

    def spy(histories: Any, hidden: Any) -> Any:
        asked.append(len(histories))
        return propose(histories, hidden)

    speculative.proposer.propose = spy  # type: ignore[method-assign]
    driver = Driver(speculative, 256)
    driver.admit(DriverRequest(1, [5, 6, 7, 8] * 4, 8, SamplingParams(grammar=compiled["order"])))
    driver.admit(DriverRequest(2, [5, 6, 7, 8] * 4, 8, SamplingParams()))
    driver.run()
    assert asked and asked[0] == 2
