"""Incremental detokenization that never emits half a multi-byte character.

Decoding one token at a time is wrong for byte-level BPE: a character such as "é" or an emoji may span tokens,
and one token alone decodes to U+FFFD. Like TGI and vLLM we keep two offsets into the generated ids: `prefix`
(where the window we decode for context starts) and `read` (the end of what was already emitted). Each step
decodes ids[prefix:read] and ids[prefix:], and emits the difference only when the longer text does not end in
U+FFFD, i.e. once the character is complete. Decoding with a little left context also keeps the leading space
that SentencePiece-style tokenizers drop at the start of a decode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

REPLACEMENT_CHAR = "\ufffd"
# Prompt tokens used as left context on the first decode (enough for any merge that spans the boundary).
CONTEXT_TOKENS = 5


class Decoder(Protocol):
    """What we need from a tokenizer: transformers' `decode` has this shape."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class _BackendDecoder:
    """The Rust tokenizer's own decode, without transformers' per-call Python wrapper (see backend_decoder)."""

    backend: Any   # tokenizers.Tokenizer

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend.decode(token_ids, skip_special_tokens=skip_special_tokens))


def backend_decoder(tokenizer: Any) -> Decoder:
    """A decoder that gives exactly `tokenizer.decode`'s text at less cost per call, else `tokenizer` itself.

    The router decodes a few ids twice per generated token; transformers' `decode` spends more time in its Python
    wrapper (argument conversion, the clean-up step's checks) than the Rust tokenizer spends decoding them (py-spy,
    server/docs/performance.md). The shortcut is taken only where the wrapper adds nothing to the text: a fast
    tokenizer whose `decode`/`_decode` are transformers' own and whose clean-up of tokenization spaces is off."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    backend = getattr(tokenizer, "_tokenizer", None)
    exact = (isinstance(tokenizer, TokenizersBackend) and backend is not None
             and type(tokenizer).decode is PreTrainedTokenizerBase.decode
             and type(tokenizer)._decode is TokenizersBackend._decode
             and not tokenizer.clean_up_tokenization_spaces)
    return _BackendDecoder(backend) if exact else tokenizer


@dataclass
class IncrementalDetokenizer:
    """Turns a growing list of generated token ids into text pieces, one call per token."""

    decoder: Decoder
    ids: list[int] = field(default_factory=list)
    prefix_offset: int = 0
    read_offset: int = 0
    skip_special_tokens: bool = False

    @classmethod
    def after_prompt(cls, decoder: Decoder, prompt_ids: list[int], skip_special_tokens: bool = False
                     ) -> "IncrementalDetokenizer":
        """Starts with the prompt's last few tokens as context, so the first generated token's space survives."""
        context = list(prompt_ids[-CONTEXT_TOKENS:])
        return cls(decoder, ids=context, prefix_offset=0, read_offset=len(context),
                   skip_special_tokens=skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Adds a token and returns the newly completed text ("" while a character is still incomplete)."""
        self.ids.append(token_id)
        window = self.ids[self.prefix_offset:]
        before = self.decoder.decode(self.ids[self.prefix_offset:self.read_offset],
                                     skip_special_tokens=self.skip_special_tokens)
        after = self.decoder.decode(window, skip_special_tokens=self.skip_special_tokens)
        if len(after) <= len(before) or after.endswith(REPLACEMENT_CHAR):
            return ""
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return after[len(before):]

    def flush(self) -> str:
        """Whatever is still held back at the end of generation (a truly invalid byte sequence stays U+FFFD)."""
        before = self.decoder.decode(self.ids[self.prefix_offset:self.read_offset],
                                     skip_special_tokens=self.skip_special_tokens)
        after = self.decoder.decode(self.ids[self.prefix_offset:], skip_special_tokens=self.skip_special_tokens)
        self.prefix_offset = self.read_offset = len(self.ids)
        return after[len(before):] if len(after) > len(before) else ""
