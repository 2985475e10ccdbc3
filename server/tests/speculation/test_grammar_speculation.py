"""Grammar-constrained requests with speculation: each verify position is masked by the grammar advanced through
the candidates before it, candidates the grammar refuses are cut, and the output equals constrained decoding
without speculation (greedy and seeded), always valid, with candidates accepted (so speculation was on).

The model is the repetitive tiny Llama (spec_testlib): under a schema whose values repeat, its greedy JSON repeats
too, which n-gram lookup proposes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import torch
from transformers import AutoTokenizer

from spec_testlib import EngineRun, Job, eos_ids
from textgen_server.grammar.compile import GrammarCompiler, build_ll_tokenizer, hf_tokenizer_json
from textgen_server.protocol import SamplingParams
from textgen_server.sampling.grammar import GrammarFactory, apply_grammar_masks, cut_candidates
from textgen_server.sampling.sampler import RequestState

LIST_SCHEMA: dict[str, Any] = {"type": "array", "minItems": 3, "maxItems": 6,
                               "items": {"enum": ["alpha beta", "gamma", "delta delta"]}}
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["a", "b"],
    "properties": {"a": {"type": "string", "maxLength": 12}, "b": {"type": "integer", "minimum": 0, "maximum": 99}}}
REGEX = r"(ab|cd)+e"


@pytest.fixture(scope="module")
def model_dir(repetitive_model_dir) -> Path:
    return repetitive_model_dir("llama")


@pytest.fixture(scope="module")
def grammars(model_dir: Path) -> dict[str, str]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab_size = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    compiler = GrammarCompiler(build_ll_tokenizer(hf_tokenizer_json(tokenizer), vocab_size, list(eos_ids(model_dir))))
    return {"list": compiler.compile({"type": "json", "value": LIST_SCHEMA}),
            "record": compiler.compile({"type": "json", "value": RECORD_SCHEMA}),
            "regex": compiler.compile({"type": "regex", "value": REGEX})}


def _jobs(model_dir: Path, grammars: dict[str, str], sampled: bool) -> list[Job]:
    generator = torch.Generator().manual_seed(11)
    jobs = []
    for i, name in enumerate(["list", "list", "record", "regex", "list", "record"]):
        prompt = torch.randint(10, 700, (12 + i,), generator=generator).tolist()
        params = SamplingParams(grammar=grammars[name], do_sample=sampled, seed=50 + i if sampled else None)
        jobs.append(Job(prompt, 80, arrival_step=i, params=params, eos_token_ids=eos_ids(model_dir)))
    return jobs


def _check_valid(text: str, name: str) -> None:
    if name == "regex":
        assert re.fullmatch(REGEX, text), text
    else:
        jsonschema_rs.validate(LIST_SCHEMA if name == "list" else RECORD_SCHEMA, json.loads(text))


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "seeded"])
def test_constrained_speculation_equals_constrained_without(model_dir: Path, grammars: dict[str, str],
                                                            sampled: bool) -> None:
    jobs = _jobs(model_dir, grammars, sampled)
    plain = EngineRun(model_dir, speculate=0).run(jobs)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eos = set(eos_ids(model_dir))
    for job, output, name in zip(jobs, plain.outputs, ["list", "list", "record", "regex", "list", "record"]):
        assert output and output[-1] in eos, "the grammar should complete within the budget"
        _check_valid(tokenizer.decode(output[:-1]), name)
    for speculate in (2, 4):
        result = EngineRun(model_dir, speculate=speculate).run(jobs)
        assert result.outputs == plain.outputs, f"--speculate {speculate} changed constrained output"
        assert result.num_accepted >= 10, f"--speculate {speculate}: only {result.num_accepted} accepted"
        assert result.num_steps < plain.num_steps


def _state(factory: GrammarFactory, grammar: str, history: list[int]) -> RequestState:
    return RequestState(SamplingParams(grammar=grammar), num_prompt_tokens=0, history=list(history),
                        grammar=factory.new_state(grammar))


def _greedy_constrained(factory: GrammarFactory, grammar: str, vocab_size: int, length: int) -> list[int]:
    """A valid token path through the grammar: each step the lowest-id allowed non-EOS token."""
    state, tokens = _state(factory, grammar, []), []
    for _ in range(length):
        allowed = apply_grammar_masks(torch.zeros(1, vocab_size), [state])[0] > float("-inf")
        allowed[list(factory.eos_token_ids)] = False
        tokens.append(int(allowed.nonzero()[0]))
        state.history.append(tokens[-1])
    return tokens


def test_verify_rows_masked_through_their_candidates(model_dir: Path, grammars: dict[str, str]) -> None:
    vocab_size = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    factory = GrammarFactory(model_dir, vocab_size, list(eos_ids(model_dir)))
    path = _greedy_constrained(factory, grammars["record"], vocab_size, 8)
    committed, candidates = path[:3], path[3:6]
    mask_zero = torch.zeros(1, vocab_size)

    def forbidden_after(k: int) -> int:
        scores = apply_grammar_masks(mask_zero, [_state(factory, grammars["record"], path[:k])])[0]
        return int((scores == float("-inf")).nonzero()[0])

    shared = _state(factory, grammars["record"], committed)
    for cands, reachable in ((candidates, 3), ([candidates[0], forbidden_after(4), candidates[2]], 1)):
        rows = [RequestState(shared.params, 0, committed + cands[:i], shared.grammar) for i in range(4)]
        masks = apply_grammar_masks(torch.zeros(4, vocab_size), rows)  # type: ignore[arg-type]
        for i in range(reachable + 1):  # each reachable row as a fresh matcher fed the same tokens
            expected = apply_grammar_masks(mask_zero, [_state(factory, grammars["record"], rows[i].history)])
            assert torch.equal(masks[i], expected[0]), f"row {i}"
        assert all((masks[i] > float("-inf")).any() for i in range(4))  # unreachable rows still sample
        assert shared.grammar is not None and shared.grammar.num_consumed == 3  # rolled back to committed
        assert not shared.grammar.matcher.is_error()
    # Proposals are cut at the first refused candidate; the matcher stays where it was.
    assert cut_candidates(shared.grammar, shared, path[3], path[4:7]) == path[4:7]
    assert cut_candidates(shared.grammar, shared, path[3], [path[4], forbidden_after(5), path[6]]) == [path[4]]
    assert cut_candidates(shared.grammar, shared, forbidden_after(3), path[4:7]) == []
    assert shared.grammar.num_consumed == 3 and not shared.grammar.matcher.is_error()
