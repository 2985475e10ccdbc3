"""Per-request output: turns the engine's sampled tokens into TGI token events (text, specials, stop sequences).

No I/O here: the batching loop feeds `RequestOutput.push` and forwards the events it returns to the client.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from textgen_server.protocol import Generation
from textgen_server.router.detokenizer import IncrementalDetokenizer, backend_decoder
from textgen_server.router.schemas import Token
from textgen_server.router.stop import StopSequenceMatcher
from textgen_server.router.validation import ValidRequest


class Tokenizer(Protocol):
    """The part of a transformers tokenizer the router uses."""

    all_special_ids: list[int]

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class Finished:
    finish_reason: str             # "length" | "eos_token" | "stop_sequence"
    generated_text: str
    generated_tokens: int


@dataclass(frozen=True)
class TokenEvent:
    """One generated token as the client sees it; `finished` is set on the request's last token."""

    index: int
    token: Token
    top_tokens: list[Token]
    finished: Finished | None = None
    # On the first event of a request that asked for decoder_input_details: log P(prompt[i] | prompt[:i]) for
    # i >= 1, as the shard computed them (empty otherwise).
    prefill_logprobs: list[float] = field(default_factory=list)


@dataclass
class RequestOutput:
    """Everything generated so far for one request, and how to present it."""

    request: ValidRequest
    tokenizer: Tokenizer
    special_ids: frozenset[int]
    detokenizer: IncrementalDetokenizer
    stop: StopSequenceMatcher
    tokens: list[Token] = field(default_factory=list)
    top_tokens: list[list[Token]] = field(default_factory=list)

    @classmethod
    def start(cls, request: ValidRequest, tokenizer: Tokenizer) -> "RequestOutput":
        return cls(request=request, tokenizer=tokenizer, special_ids=frozenset(tokenizer.all_special_ids),
                   detokenizer=IncrementalDetokenizer.after_prompt(backend_decoder(tokenizer), request.prompt_ids),
                   stop=StopSequenceMatcher(request.stop_sequences))

    def push(self, generation: Generation, engine_finish: str | None) -> TokenEvent:
        """Adds a sampled token; the event is final when the engine finished it or a stop sequence appeared."""
        token_id = generation.token.id
        special = token_id in self.special_ids
        text = self.detokenizer.push(token_id)
        reason = engine_finish
        if reason is None and not special and self.stop.push(text) is not None:
            reason = "stop_sequence"
        if reason is not None:  # the last event carries any text still held back (a cut character)
            text += self.detokenizer.flush()
        token = Token(id=token_id, text=text, logprob=generation.token.logprob, special=special)
        top = [self._token(t.id, t.logprob) for t in generation.top_tokens]
        self.tokens.append(token)
        self.top_tokens.append(top)
        finished = self._finish(reason) if reason is not None else None
        return TokenEvent(index=len(self.tokens) - 1, token=token, top_tokens=top, finished=finished,
                          prefill_logprobs=generation.prefill_logprobs)

    def generated_text(self) -> str:
        """The whole output, special tokens left out (as TGI's generated_text)."""
        ids = [t.id for t in self.tokens]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _finish(self, reason: str) -> Finished:
        return Finished(finish_reason=reason, generated_text=self.generated_text(),
                        generated_tokens=len(self.tokens))

    def _token(self, token_id: int, logprob: float) -> Token:
        return Token(id=token_id, text=self.tokenizer.decode([token_id], skip_special_tokens=False),
                     logprob=logprob, special=token_id in self.special_ids)
