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


def test_backend_decoder_gives_the_tokenizers_text_for_every_window(tokenizer) -> None:
    from textgen_server.router.detokenizer import _BackendDecoder, backend_decoder

    decoder = backend_decoder(tokenizer)
    assert isinstance(decoder, _BackendDecoder), "the test tokenizer should take the fast path"
    ids = tokenizer(" ".join(TEXTS))["input_ids"] + [tokenizer.eos_token_id]
    for start in range(len(ids)):
        for stop in range(start, min(len(ids), start + 8) + 1):
            for skip in (False, True):
                assert decoder.decode(ids[start:stop], skip_special_tokens=skip) == \
                    tokenizer.decode(ids[start:stop], skip_special_tokens=skip)


@pytest.mark.parametrize("text", TEXTS)
def test_detokenizer_on_the_backend_decoder_emits_the_same_pieces(tokenizer, text: str) -> None:
    from textgen_server.router.detokenizer import backend_decoder

    prompt = tokenizer("Once upon a time")["input_ids"]
    generated = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    runs = []
    for decoder in (tokenizer, backend_decoder(tokenizer)):
        detok = IncrementalDetokenizer.after_prompt(decoder, prompt)
        runs.append([detok.push(token_id) for token_id in generated] + [detok.flush()])
    assert runs[0] == runs[1]


def test_backend_decoder_keeps_the_tokenizer_when_its_wrapper_changes_the_text(tokenizer) -> None:
    # With clean-up on, transformers' decode may post-process the text: the shortcut would differ, so none.
    import copy

    from textgen_server.router.detokenizer import backend_decoder

    cleaning = copy.deepcopy(tokenizer)
    cleaning.clean_up_tokenization_spaces = True
    assert backend_decoder(cleaning) is cleaning

    class Custom(type(tokenizer)):  # type: ignore[misc]
        def decode(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return "custom"

    custom = copy.deepcopy(tokenizer)
    custom.__class__ = Custom
    assert backend_decoder(custom) is custom
