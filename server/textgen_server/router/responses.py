"""Pure builders of TGI response bodies and SSE frames from token events."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from textgen_server.router.schemas import (
    BestOfSequence,
    Details,
    GenerateResponse,
    PrefillToken,
    StreamDetails,
    StreamResponse,
    Token,
)
from textgen_server.router.stream import Finished, TokenEvent
from textgen_server.router.validation import ValidRequest


def format_sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object (TGI writes `data:` without a space)."""
    return b"data:" + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def full_text(request: ValidRequest, inputs: str, generated_text: str) -> str:
    return inputs + generated_text if request.return_full_text else generated_text


def build_stream_response(event: TokenEvent, request: ValidRequest, inputs: str) -> StreamResponse:
    """A /generate_stream event; the last one carries generated_text and details, as TGI's."""
    finished = event.finished
    if finished is None:
        return StreamResponse(index=event.index, token=event.token, top_tokens=event.top_tokens)
    details = StreamDetails(finish_reason=finished.finish_reason,  # type: ignore[arg-type]
                            generated_tokens=finished.generated_tokens, seed=_seed(request),
                            input_length=len(request.prompt_ids))
    return StreamResponse(index=event.index, token=event.token, top_tokens=event.top_tokens,
                          generated_text=full_text(request, inputs, finished.generated_text), details=details)


@dataclass(frozen=True)
class Candidate:
    """One finished generation of a request (best_of > 1 produces several, with their own seeds)."""

    request: ValidRequest
    finished: Finished
    tokens: list[Token]
    top_tokens: list[list[Token]]
    prefill_logprobs: list[float] = field(default_factory=list)  # log P(prompt[i] | prompt[:i]), i >= 1

    def sum_logprob(self) -> float:
        """TGI's ranking of best_of candidates: the sum of the chosen tokens' logprobs."""
        return sum(token.logprob for token in self.tokens if token.logprob is not None)


def pick_best(candidates: list[Candidate]) -> tuple[Candidate, list[Candidate]]:
    """The most likely candidate and the others, in submission order (ties go to the first)."""
    best = max(range(len(candidates)), key=lambda i: (candidates[i].sum_logprob(), -i))
    return candidates[best], [c for i, c in enumerate(candidates) if i != best]


def build_generate_response(best: Candidate, others: list[Candidate], inputs: str,
                            prefill: list[PrefillToken]) -> GenerateResponse:
    """The /generate body; details only when the client asked for them, best_of_sequences only with best_of."""
    request = best.request
    text = full_text(request, inputs, best.finished.generated_text)
    if not request.details:
        return GenerateResponse(generated_text=text)
    details = Details(finish_reason=best.finished.finish_reason,  # type: ignore[arg-type]
                      generated_tokens=best.finished.generated_tokens, seed=_seed(request),
                      prefill=prefill if request.decoder_input_details else [], tokens=best.tokens,
                      top_tokens=best.top_tokens if request.params.top_n_tokens else None,
                      best_of_sequences=[_best_of_sequence(c, inputs, prefill) for c in others] if others else None)
    return GenerateResponse(generated_text=text, details=details)


def _best_of_sequence(candidate: Candidate, inputs: str, prefill: list[PrefillToken]) -> BestOfSequence:
    request = candidate.request
    return BestOfSequence(generated_text=full_text(request, inputs, candidate.finished.generated_text),
                          finish_reason=candidate.finished.finish_reason,  # type: ignore[arg-type]
                          generated_tokens=candidate.finished.generated_tokens, seed=_seed(request),
                          prefill=prefill if request.decoder_input_details else [], tokens=candidate.tokens,
                          top_tokens=candidate.top_tokens if request.params.top_n_tokens else [])


def dump_generate_response(response: GenerateResponse) -> dict[str, Any]:
    """JSON as TGI writes it: no `details` key without details, no `top_tokens` when none were asked."""
    body = response.model_dump()
    if body["details"] is None:
        del body["details"]
        return body
    for key in ("top_tokens", "best_of_sequences"):  # TGI leaves these out unless the request produced them
        if body["details"][key] is None:
            del body["details"][key]
    return body


def dump_stream_response(response: StreamResponse) -> dict[str, Any]:
    """JSON as TGI writes it: `top_tokens` only when the client asked for alternatives."""
    body = response.model_dump()
    if not body["top_tokens"]:
        del body["top_tokens"]
    return body


def _seed(request: ValidRequest) -> int | None:
    return request.params.seed if request.report_seed else None
