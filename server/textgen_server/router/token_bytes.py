"""The raw UTF-8 bytes of one token, for OpenAI's logprobs `bytes` field.

A token may hold part of a character (byte-level BPE splits "é" or emoji over tokens); decoding it alone gives
U+FFFD, so clients rebuild text from `bytes` instead. The bytes come from the token's vocabulary string:
byte-level BPE (GPT-2 style) maps each byte to a printable character, SentencePiece writes bytes as `<0xAB>`
and spaces as U+2581. Any other tokenizer falls back to the decoded text.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SENTENCEPIECE_SPACE = "\u2581"


@lru_cache(maxsize=1)
def byte_level_decoding() -> dict[str, int]:
    """The inverse of GPT-2's bytes -> printable characters table (the one tokenizers' ByteLevel uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def vocabulary_bytes(piece: str, byte_level: bool) -> bytes | None:
    """Bytes of a vocabulary string; None when it is not in a form we know (the caller decodes instead)."""
    if byte_level:
        table = byte_level_decoding()
        return bytes(table[char] for char in piece) if all(char in table for char in piece) else None
    match = _SENTENCEPIECE_BYTE.fullmatch(piece)
    if match is not None:
        return bytes([int(match.group(1), 16)])
    return piece.replace(_SENTENCEPIECE_SPACE, " ").encode()


def token_bytes_for(tokenizer: Any) -> "TokenBytes":
    """The lookup for `tokenizer`, built once (a server has one tokenizer for its lifetime)."""
    found = _LOOKUPS.get(id(tokenizer))
    if found is None or found.tokenizer is not tokenizer:
        found = _LOOKUPS[id(tokenizer)] = TokenBytes(tokenizer)
    return found


class TokenBytes:
    """Per-tokenizer lookup of token bytes (cached: the same ids recur constantly)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"
        self.special_ids = frozenset(getattr(tokenizer, "all_special_ids", ()))
        self._cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._lookup(token_id)
            self._cache[token_id] = cached
        return cached

    def _lookup(self, token_id: int) -> bytes:
        if token_id not in self.special_ids:  # special tokens are stored as their literal text
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            found = vocabulary_bytes(piece, self.byte_level) if isinstance(piece, str) else None
            if found is not None:
                return found
        return str(self.tokenizer.decode([token_id], skip_special_tokens=False)).encode()


_LOOKUPS: dict[int, TokenBytes] = {}
