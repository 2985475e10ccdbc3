"""The pure parts: the one choice of speculation (config.py), n-gram lookup, and the scheduler's candidate
trimming and generation grouping (engine/speculative.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from textgen_server.engine import BlockManager, Sequence
from textgen_server.engine.speculative import fit_candidates, group_generations
from textgen_server.protocol import Generation, StepItem, Token
from textgen_server.speculation.config import MEDUSA_WEIGHTS, SpeculationConfigError, plan_speculation
from textgen_server.speculation.ngram import propose_ngram


def _model(tmp_path: Path, **config: object) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    return tmp_path


def test_plan_is_off_ngram_or_medusa(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    plain = _model(tmp_path / "plain")
    assert plan_speculation(plain, None).method == "off"
    assert plan_speculation(plain, 0).method == "off"
    assert (plan_speculation(plain, 3).method, plan_speculation(plain, 3).num_tokens) == ("ngram", 3)
    with pytest.raises(SpeculationConfigError, match="--speculate 17 is out of range: use 0 .off. to 16"):
        plan_speculation(plain, 17)
    medusa = tmp_path / "medusa"
    medusa.mkdir()
    _model(medusa, medusa_num_heads=4, medusa_num_layers=1, base_model_name_or_path="org/base")
    (medusa / MEDUSA_WEIGHTS).write_bytes(b"")
    assert (plan_speculation(medusa, None).method, plan_speculation(medusa, None).num_tokens) == ("medusa", 4)
    assert plan_speculation(medusa, 2).num_tokens == 2
    assert plan_speculation(medusa, 0).method == "off"
    with pytest.raises(SpeculationConfigError, match="--speculate 5 exceeds the 4 Medusa heads"):
        plan_speculation(medusa, 5)


@pytest.mark.parametrize("tokens, k, expected", [
    ([1, 2, 3, 4, 5, 1, 2, 3], 3, [4, 5, 1]),         # longest suffix (1 2 3) found earlier
    ([1, 2, 9, 8, 2, 9, 7, 1, 2, 9], 2, [8, 2]),      # the longest suffix (1 2 9) beats a later "2 9"
    ([2, 9, 8, 5, 2, 9, 7, 6, 2, 9], 2, [7, 6]),      # latest occurrence of "2 9" wins
    ([1, 2, 3, 4, 5, 6], 2, []),                       # nothing repeats: no candidates
    ([5, 7, 5, 8], 2, []),                             # the last token never occurred before: nothing
    ([5, 7, 3, 9, 5], 2, [7, 3]),                      # one repeated token is a clue (NGRAM_MIN_N = 1)
    ([5, 7, 3, 5, 8, 9, 5], 2, [8, 9]),                # ... its latest occurrence first
    ([1, 2, 3, 1, 2], 5, [3, 1, 2]),                   # fewer than k tokens follow: all of them
    ([256, 1, 256, 1], 2, [256, 1]),                   # ids whose bytes could straddle a packed boundary
    ([1 << 16, 1, 1 << 16, 1], 1, [1 << 16]),
])
def test_ngram_lookup(tokens: list[int], k: int, expected: list[int]) -> None:
    assert propose_ngram(tokens, k) == expected


def test_candidates_are_trimmed_to_remaining_tokens_and_free_blocks() -> None:
    blocks = BlockManager(num_blocks=2, block_size=4)
    seq = Sequence(1, [1, 2, 3], max_new_tokens=10)
    blocks.allocate(seq)
    seq.speculative_ids = [7, 8, 9, 10, 11, 12]
    assert fit_candidates(seq, blocks) == [7, 8, 9, 10, 11]      # 3 + 5 = 8 slots: both blocks
    seq.max_new_tokens = 3
    assert fit_candidates(seq, blocks) == [7, 8]                 # the token after them makes 3
    other = Sequence(2, [1], max_new_tokens=10)
    blocks.allocate(other)                                       # the second block is gone
    seq.max_new_tokens = 10
    assert fit_candidates(seq, blocks) == [7]                    # 3 + 1 slots fit the first block


def test_generation_groups_follow_the_contract() -> None:
    item = StepItem(1, [5, 7, 8], 10, [0], True, num_speculative=2)
    other = StepItem(2, [3], 4, [1], True)
    gen = lambda rid, tok: Generation(rid, Token(tok, 0.0))  # noqa: E731
    groups = group_generations([item, other], [gen(1, 7), gen(1, 9), gen(2, 4)])
    assert [[g.token.id for g in group] for group in groups] == [[7, 9], [4]]
    with pytest.raises(ValueError, match="not a prefix of the candidates"):
        group_generations([item, other], [gen(1, 8), gen(1, 9), gen(2, 4)])
    with pytest.raises(ValueError, match="expected \\[1, 2\\]"):
        group_generations([item, other], [gen(1, 7), gen(1, 8), gen(1, 1), gen(1, 1), gen(2, 4)])
