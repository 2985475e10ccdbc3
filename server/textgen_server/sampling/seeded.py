"""Seeded randomness that depends only on (seed, index of the generated token).

A request's n-th generated token is drawn with noise from a generator seeded by mix_seed(seed, n), so the same
seed gives the same tokens whatever else shares the batch and after a preemption recomputes the request.
"""
from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def mix_seed(seed: int, index: int) -> int:
    """A 63-bit seed derived from (seed, index) with splitmix64 finalisation (distinct inputs -> unrelated seeds)."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def exponential_noise(seed: int, index: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """Exp(1) noise [V] for the index-th generated token of a request seeded with `seed`."""
    generator = torch.Generator(device=device).manual_seed(mix_seed(seed, index))
    return torch.empty(vocab_size, device=device).exponential_(generator=generator)


def sample_with_noise(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw one token per row from probs [B, V] given Exp(1) noise [B, V]: argmax(p / E) is distributed as p."""
    return (probs / noise).argmax(dim=1)
