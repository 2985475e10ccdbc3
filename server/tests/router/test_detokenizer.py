"""Incremental detokenization with a real byte-level BPE tokenizer (trained offline by the test fixtures)."""
from __future__ import annotations

import pytest

from textgen_server.router.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer
from textgen_server.testing import build_tiny_tokenizer

TEXTS = [
    "plain ascii words, with punctuation!",
    "caf\u00e9 na\u00efve \u00fcber se\u00f1or",                 # 2-byte characters
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",           # 3-byte CJK, unlikely to be merged
    "emoji \U0001f600\U0001f680 and \U0001f9d1\u200d\U0001f4bb",  # 4-byte characters and a ZWJ sequence
]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return build_tiny_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_the_full_decode_and_never_hold_half_a_character(tokenizer, text: str) -> None:
    prompt = tokenizer("Once upon a time")["input_ids"]
    generated = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer.after_prompt(tokenizer, prompt)
    pieces = [detok.push(token_id) for token_id in generated]
    pieces.append(detok.flush())
    assert "".join(pieces) == tokenizer.decode(generated)
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)


def test_multibyte_character_split_over_tokens_is_held_back_until_complete(tokenizer) -> None:
    generated = tokenizer("\U0001f9d1", add_special_tokens=False)["input_ids"]
    assert len(generated) > 1, "the test needs a character that the tokenizer splits into several tokens"
    detok = IncrementalDetokenizer.after_prompt(tokenizer, [])
    pieces = [detok.push(token_id) for token_id in generated]
    assert pieces[:-1] == [""] * (len(generated) - 1)
    assert pieces[-1] == "\U0001f9d1"


def test_flush_returns_an_unfinished_character_as_replacement(tokenizer) -> None:
    generated = tokenizer("\U0001f9d1", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer.after_prompt(tokenizer, [])
    assert detok.push(generated[0]) == ""
    assert REPLACEMENT_CHAR in detok.flush()
