"""The shard's proposer, built from the launcher's decision (config.plan_speculation)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from textgen_server.speculation.config import SpeculationConfigError, read_medusa_config
from textgen_server.speculation.medusa import MedusaProposer, load_medusa_heads
from textgen_server.speculation.ngram import NgramProposer


class Proposer(Protocol):
    """Candidates for each request from its tokens so far (the last one just sampled) and the hidden state of
    the position before that token (row i of hidden [S, H] belongs to histories[i])."""

    method: str
    num_tokens: int

    def propose(self, histories: Sequence[Sequence[int]], hidden: torch.Tensor) -> list[list[int]]: ...


def build_proposer(speculate: int, medusa_path: Path | None, hidden_size: int, vocab_size: int,
                   device: torch.device, dtype: torch.dtype) -> Proposer | None:
    """None without speculation; Medusa when the launcher passed a Medusa repository, else n-gram."""
    if speculate <= 0:
        return None
    if medusa_path is None:
        return NgramProposer(speculate)
    config = read_medusa_config(medusa_path)
    if config is None:
        raise SpeculationConfigError(f"{medusa_path} is not a Medusa repository (no medusa_num_heads in config.json)")
    if speculate > config.num_heads:
        raise SpeculationConfigError(f"--speculate {speculate} exceeds the {config.num_heads} heads of {medusa_path}")
    return MedusaProposer(load_medusa_heads(config, hidden_size, vocab_size, device, dtype), speculate)
