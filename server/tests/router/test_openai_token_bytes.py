"""Token bytes for logprobs: exact even where a token holds part of a character, on a real byte-level BPE
tokenizer (the tiny test tokenizer) and on SentencePiece-style vocabulary strings."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_server.router.token_bytes import TokenBytes, byte_level_decoding, vocabulary_bytes
from textgen_server.testing.tiny_models import build_tiny_tokenizer

TEXTS = ["plain ascii words", "naïve café — 東京タワー 🚀🚀 emoji", "Здравствуй, мир! ¿Qué tal?"]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tiny_tokenizer()


def test_byte_level_table_is_a_bijection_over_all_256_bytes() -> None:
    table = byte_level_decoding()
    assert sorted(table.values()) == list(range(256)) and len(table) == 256


@pytest.mark.parametrize("text", TEXTS)
def test_the_bytes_of_a_texts_tokens_concatenate_to_the_text(tokenizer: Any, text: str) -> None:
    token_bytes = TokenBytes(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert token_bytes.byte_level
    assert b"".join(token_bytes(token_id) for token_id in ids) == text.encode()
    # Some of these tokens are partial characters: decoding them alone loses information, bytes do not.
    if not text.isascii():
        assert any("\ufffd" in tokenizer.decode([token_id]) for token_id in ids)


def test_special_tokens_give_their_literal_text(tokenizer: Any) -> None:
    assert TokenBytes(tokenizer)(tokenizer.convert_tokens_to_ids("</s>")) == b"</s>"


@pytest.mark.parametrize(("piece", "expected"), [("<0xE3>", b"\xe3"), ("\u2581hello", b" hello"), ("ab", b"ab")])
def test_sentencepiece_vocabulary_strings(piece: str, expected: bytes) -> None:
    assert vocabulary_bytes(piece, byte_level=False) == expected
