"""Logits processors, vectorised over a batch with one parameter per row.

Every function takes scores [B, V] (float) and per-row parameters [B], and returns new scores; a row whose
parameter means "off" is returned unchanged. Semantics follow transformers' processors of the same name
(repetition penalty, temperature, top-k, top-p, typical-p) and TGI for the frequency penalty.
"""
from __future__ import annotations

import torch

FILTERED = float("-inf")


def token_counts(histories: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """How often each token occurs in each row's history: [B, V] float."""
    counts = torch.zeros(len(histories), vocab_size, device=device)
    for row, history in enumerate(histories):
        if history:
            ids = torch.tensor(history, dtype=torch.long, device=device)
            counts[row] = torch.bincount(ids, minlength=vocab_size)[:vocab_size].float()
    return counts


def apply_repetition_penalty(scores: torch.Tensor, counts: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """CTRL/transformers: for tokens already seen, divide positive scores by the penalty, multiply negative ones."""
    penalty = penalty.unsqueeze(1)
    penalised = torch.where(scores > 0, scores / penalty, scores * penalty)
    return torch.where(counts > 0, penalised, scores)


def apply_frequency_penalty(scores: torch.Tensor, counts: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """TGI: subtract penalty * (occurrences of the token / number of tokens so far, prompt included)."""
    num_tokens = counts.sum(dim=1, keepdim=True).clamp(min=1)
    return scores - penalty.unsqueeze(1) * counts / num_tokens


def apply_temperature(scores: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide by the temperature (1.0 = unchanged)."""
    return scores / temperature.unsqueeze(1)


def apply_top_k(scores: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep the k best tokens of each row (ties with the k-th are kept, as in transformers); 0 = off."""
    vocab_size = scores.shape[1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab_size), vocab_size).long()
    kth_best = scores.sort(dim=1, descending=True).values.gather(1, (k - 1).unsqueeze(1))
    return scores.masked_fill(scores < kth_best, FILTERED)


def apply_top_p(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of best tokens whose probability reaches top_p (at least one); 1.0 = off."""
    active = top_p < 1.0
    if not active.any():
        return scores
    sorted_scores, sorted_ids = scores.sort(dim=1, descending=False)
    cumulative = sorted_scores.softmax(dim=1).cumsum(dim=1)
    remove_sorted = cumulative <= (1 - top_p).unsqueeze(1)
    remove_sorted[:, -1] = False  # the best token always stays
    remove_sorted &= active.unsqueeze(1)
    remove = remove_sorted.scatter(1, sorted_ids, remove_sorted)
    return scores.masked_fill(remove, FILTERED)


def apply_typical_p(scores: torch.Tensor, typical_p: torch.Tensor) -> torch.Tensor:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to mass
    typical_p (at least one); 1.0 = off."""
    active = typical_p < 1.0
    if not active.any():
        return scores
    log_probs = scores.log_softmax(dim=1)
    entropy = -(log_probs * log_probs.exp()).nansum(dim=1, keepdim=True)
    distance = (-log_probs - entropy).abs()
    sorted_distance, sorted_ids = distance.sort(dim=1)
    cumulative = scores.gather(1, sorted_ids).softmax(dim=1).cumsum(dim=1)
    last_kept = (cumulative < typical_p.unsqueeze(1)).sum(dim=1).clamp(max=scores.shape[1] - 1)
    remove_sorted = sorted_distance > sorted_distance.gather(1, last_kept.unsqueeze(1))
    remove_sorted[:, 0] = False
    remove_sorted &= active.unsqueeze(1)
    remove = remove_sorted.scatter(1, sorted_ids, remove_sorted)
    return scores.masked_fill(remove, FILTERED)
