"""Choose the next token of every sampling row in a step, with logprobs and top-n alternatives.

Order, as TGI: watermark (watermark.py), repetition penalty, frequency penalty, then temperature, top-k, top-p,
typical-p; the grammar mask (grammar.py) goes first, which is the same as TGI's place after the penalties since
-inf stays -inf under all of them. Greedy rows take the argmax of the processed scores; sampling rows draw with
seeded noise (seeded.py).
Logprobs are those of the distribution the token was chosen from (after the processors), as TGI returns them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from textgen_server.protocol import Generation, SamplingParams, Token
from textgen_server.sampling import processors
from textgen_server.sampling.grammar import GrammarState, apply_grammar_masks
from textgen_server.sampling.seeded import exponential_noise, sample_with_noise
from textgen_server.sampling.watermark import apply_watermark


@dataclass
class RequestState:
    """What the shard keeps per request between steps: its parameters and every token fed to the model."""

    params: SamplingParams
    num_prompt_tokens: int
    history: list[int] = field(default_factory=list)   # prompt + generated tokens, in order
    grammar: GrammarState | None = None                # the matcher of a constrained request (params.grammar)

    @property
    def num_generated(self) -> int:
        """Tokens generated so far (fed back to the model), i.e. the index of the next generated token."""
        return len(self.history) - self.num_prompt_tokens


def sample_batch(request_ids: list[int], logits: torch.Tensor, states: list[RequestState]) -> list[Generation]:
    """One Generation per row of logits [S, V] (float32 recommended), row i belonging to states[i]."""
    scores = _process(apply_grammar_masks(logits.float(), states), states)
    log_probs = scores.log_softmax(dim=1)
    chosen = _choose(log_probs, states)
    chosen_logprobs = log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()
    chosen_ids = chosen.tolist()
    max_top_n = max(state.params.top_n_tokens for state in states)
    top = log_probs.topk(min(max_top_n, log_probs.shape[1]), dim=1) if max_top_n > 0 else None
    generations = []
    for row, (request_id, state) in enumerate(zip(request_ids, states)):
        top_tokens = _top_tokens(top, row, state.params.top_n_tokens) if top is not None else []
        token = Token(id=chosen_ids[row], logprob=chosen_logprobs[row])
        generations.append(Generation(request_id=request_id, token=token, top_tokens=top_tokens))
    return generations


def _process(scores: torch.Tensor, states: list[RequestState]) -> torch.Tensor:
    device = scores.device
    params = [state.params for state in states]

    def column(name: str) -> torch.Tensor:
        return torch.tensor([getattr(p, name) for p in params], dtype=torch.float32, device=device)

    if any(p.watermark is not None for p in params):  # first, as TGI: the green bias is part of the logits
        scores = apply_watermark(scores, [s.history[-1] for s in states], [p.watermark for p in params])
    if any(p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0 for p in params):
        counts = processors.token_counts([s.history for s in states], scores.shape[1], device)
        scores = processors.apply_repetition_penalty(scores, counts, column("repetition_penalty"))
        scores = processors.apply_frequency_penalty(scores, counts, column("frequency_penalty"))
    if any(p.temperature != 1.0 for p in params):
        scores = processors.apply_temperature(scores, column("temperature"))
    if any(p.top_k > 0 for p in params):
        scores = processors.apply_top_k(scores, column("top_k").long())
    scores = processors.apply_top_p(scores, column("top_p"))
    return processors.apply_typical_p(scores, column("typical_p"))


def _choose(log_probs: torch.Tensor, states: list[RequestState]) -> torch.Tensor:
    chosen = log_probs.argmax(dim=1)
    sampling_rows = [row for row, state in enumerate(states) if state.params.do_sample]
    if sampling_rows:
        vocab_size, device = log_probs.shape[1], log_probs.device
        # Per-request generators: each row's noise depends only on its own (seed, n), never on the batch.
        noise = torch.stack(
            [
                exponential_noise(states[row].params.seed, states[row].num_generated, vocab_size, device)
                for row in sampling_rows
            ]
        )
        rows = torch.tensor(sampling_rows, dtype=torch.long, device=device)
        chosen[rows] = sample_with_noise(log_probs[rows].exp(), noise)
    return chosen


def _top_tokens(top: torch.return_types.topk, row: int, top_n: int) -> list[Token]:
    ids = top.indices[row, :top_n].tolist()
    logprobs = top.values[row, :top_n].tolist()
    return [Token(id=i, logprob=lp) for i, lp in zip(ids, logprobs)]
