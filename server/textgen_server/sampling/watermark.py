"""The green-list watermark of Kirchenbauer et al. ("A Watermark for Large Language Models", 2023), as TGI applies it.

At every generated position the vocabulary is split by the previous token: the green list is the first
int(V * gamma) ids of `torch.randperm(V)` drawn from a generator seeded with HASH_KEY * previous token id
(TGI's `utils/watermark.py`: same key, same seeding, same list size), and `delta` is added to the green logits
before any other processor (TGI's order). Sampling then favours green tokens, and a detector that knows only the
text, the tokenizer and gamma can count them (`watermark_detect.py`): unwatermarked text is green at rate gamma.

The permutation is always drawn by a CPU generator, whatever device the model runs on, because a CUDA generator
draws another permutation from the same seed and a detector (usually on a CPU) must see the lists the server used.
(TGI draws on the model's device, so its GPU-watermarked texts only verify with a GPU detector.)

Per row, only the row's own state is read (its previous token and parameters), so the processor works the same in
any batch and at every speculative position (where the previous token is the candidate before it).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from textgen_server.protocol import WatermarkParams

# TGI's hash key: "just a large prime number to create a rng seed with sufficient bit width".
HASH_KEY = 15485863
# Green lists are cached as [V] bool masks: 256 of them are ~40 MB at a 152k vocabulary, and the previous tokens of
# a batch repeat often (punctuation, spaces), so most rows skip the permutation.
_CACHE_SIZE = 256


def green_list_size(vocab_size: int, gamma: float) -> int:
    """How many ids each green list holds (TGI's int(V * gamma))."""
    return int(vocab_size * gamma)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def green_mask(previous_token_id: int, vocab_size: int, gamma: float) -> torch.Tensor:
    """[V] bool on the CPU: True for the green ids that follow `previous_token_id`."""
    generator = torch.Generator(device="cpu").manual_seed(HASH_KEY * previous_token_id)
    green_ids = torch.randperm(vocab_size, generator=generator)[: green_list_size(vocab_size, gamma)]
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[green_ids] = True
    return mask


def apply_watermark(scores: torch.Tensor, previous_token_ids: Sequence[int],
                    params: Sequence[WatermarkParams | None]) -> torch.Tensor:
    """scores [B, V] with each watermarked row's green logits raised by its delta; rows with None are unchanged."""
    rows = [row for row, watermark in enumerate(params) if watermark is not None]
    if not rows:
        return scores
    vocab_size = scores.shape[1]
    bias = torch.zeros(len(params), vocab_size, dtype=scores.dtype)
    for row in rows:
        watermark = params[row]
        assert watermark is not None
        bias[row] = green_mask(previous_token_ids[row], vocab_size, watermark.gamma).to(scores.dtype) * watermark.delta
    return scores + bias.to(scores.device)
