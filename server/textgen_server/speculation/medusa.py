"""Medusa heads (TGI's layout): head h is `medusa_num_layers` residual blocks x + SiLU(W x + b) followed by a
projection to the vocabulary; it reads the base model's last hidden state (after the final norm) at the latest
token t and predicts the token at t + 2 + h (the base LM head predicts t + 1).

Weights: `medusa_lm_head.safetensors` with keys `{h}.{l}.linear.weight`, `{h}.{l}.linear.bias` for l < layers
and `{h}.{layers}.weight` (the projection, no bias): exactly the state dict of MedusaHeads below.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from safetensors.torch import load_file
from torch import nn

from textgen_server.speculation.config import MEDUSA_WEIGHTS, MedusaConfig, SpeculationConfigError


class ResBlock(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))


class MedusaHeads(nn.Module):
    """num_heads heads; forward maps hidden [S, H] to logits [S, num_heads, V]."""

    def __init__(self, hidden_size: int, vocab_size: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(*[ResBlock(hidden_size) for _ in range(num_layers)],
                          nn.Linear(hidden_size, vocab_size, bias=False))
            for _ in range(num_heads)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(hidden) for head in self.heads], dim=1)

    def state_dict_for_file(self) -> dict[str, torch.Tensor]:
        """The safetensors keys of TGI's layout (the ModuleList prefix dropped)."""
        return {key.removeprefix("heads."): value.contiguous() for key, value in self.state_dict().items()}


def load_medusa_heads(config: MedusaConfig, hidden_size: int, vocab_size: int, device: torch.device,
                      dtype: torch.dtype) -> MedusaHeads:
    """The heads of a Medusa repository, checked against the base model's sizes; SpeculationConfigError if not."""
    path = config.path / MEDUSA_WEIGHTS
    try:
        tensors = load_file(str(path))
    except Exception as error:  # noqa: BLE001 - a corrupt file: say which one
        raise SpeculationConfigError(f"cannot read the Medusa heads {path}: {error}") from error
    heads = MedusaHeads(hidden_size, vocab_size, config.num_heads, config.num_layers)
    expected = {k: tuple(v.shape) for k, v in heads.state_dict_for_file().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:4]
        extra = sorted(set(found) - set(expected))[:4]
        shapes = [f"{k}: {found[k]} != {expected[k]}" for k in sorted(set(expected) & set(found))
                  if found[k] != expected[k]][:4]
        raise SpeculationConfigError(
            f"{path} does not match medusa_num_heads={config.num_heads}, medusa_num_layers={config.num_layers}"
            f" and the base model (hidden {hidden_size}, vocab {vocab_size}): missing {missing}, unexpected"
            f" {extra}, wrong shapes {shapes}; the heads must be trained for base model {config.base_model_id}"
        )
    heads.load_state_dict({f"heads.{k}": v for k, v in tensors.items()})
    return heads.to(device=device, dtype=dtype).eval()


class MedusaProposer:
    """Candidates = each of the first num_tokens heads' best token at the latest accepted position."""

    method = "medusa"

    def __init__(self, heads: MedusaHeads, num_tokens: int) -> None:
        self.heads = heads
        self.num_tokens = num_tokens

    def propose(self, histories: Sequence[Sequence[int]], hidden: torch.Tensor) -> list[list[int]]:
        if not histories:
            return []
        with torch.inference_mode():
            logits = torch.stack([head(hidden) for head in self.heads.heads[: self.num_tokens]], dim=1)
        return [row for row in logits.argmax(dim=-1).tolist()]
