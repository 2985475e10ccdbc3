"""Tensor parallelism as a pass over a built model (as gpt-fast's tp.py): the model files know nothing of ranks.

`apply_tensor_parallel(model, rank, world_size)` walks a model skeleton (on the meta device, before any weight is
read) and swaps modules for their rank-local versions; it returns the slicing plan that the sharded loader
(models/sharded_loading.py) follows, so each rank reads only its slices of the checkpoint:

- column-parallel q/k/v and gate/up: a rank keeps rows [r*n/N, (r+1)*n/N) of the weight (and of the bias, as
  Qwen2's q/k/v have): whole attention heads and KV heads, since rows are laid out head after head; the
  attention layers reshape with -1 heads, so they simply see fewer heads (and the paged KV cache holds only
  this rank's KV heads);
- row-parallel o and down: a rank keeps the matching input columns and sums its partial output with the
  others' (one all-reduce each; a bias, if any, is added once after the sum);
- vocabulary-parallel embedding and LM head: rank r holds vocabulary rows [r*B, (r+1)*B) with B = ceil(V/N)
  (the last rank's block is zero-padded when V does not divide); the embedding zeroes foreign ids and
  all-reduces (x + 0 is exact), the LM head all-gathers its logit columns and drops the padding.

Every rank ends a step with identical full logits (an all-gather copies, it does not sum), and samples with the
same seeded generator; rank 0's token is the one the router uses and sends back to every rank.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_PARALLEL = ("o_proj", "down_proj")
VOCAB_PARALLEL = ("embed_tokens", "lm_head")


@dataclass(frozen=True)
class SliceSpec:
    """How one checkpoint tensor is cut for a rank: along `dim`, rows/columns [start, stop), zero-padded to `size`."""

    dim: int
    start: int
    stop: int
    size: int


class RowParallelLinear(nn.Module):
    """y = sum over ranks of x_r @ W_r^T, then the bias once. weight [out, in / N]."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight)
        dist.all_reduce(out)
        return out if self.bias is None else out + self.bias


class VocabParallelEmbedding(nn.Module):
    """Rows [start, start + block) of the vocabulary; ids outside give zeros, then the ranks' rows are summed."""

    def __init__(self, block: int, start: int, vocab_size: int, hidden: int, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.start, self.stop = start, min(start + block, vocab_size)
        self.weight = nn.Parameter(torch.empty(block, hidden, dtype=dtype), requires_grad=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mine = (input_ids >= self.start) & (input_ids < self.stop)
        local = torch.where(mine, input_ids - self.start, torch.zeros_like(input_ids))
        out = F.embedding(local, self.weight) * mine.unsqueeze(-1).to(self.weight.dtype)  # [..., hidden]
        dist.all_reduce(out)
        return out


class VocabParallelLMHead(nn.Module):
    """Logits of this rank's vocabulary block, gathered from every rank into the full [..., V] logits."""

    def __init__(self, block: int, vocab_size: int, hidden: int, world_size: int, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.vocab_size, self.world_size = vocab_size, world_size
        self.weight = nn.Parameter(torch.empty(block, hidden, dtype=dtype), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        local = F.linear(hidden, self.weight).contiguous()  # [..., B]
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return torch.cat(parts, dim=-1)[..., : self.vocab_size]  # [..., V]


def even_split(size: int, rank: int, world_size: int, what: str) -> SliceSpec:
    if size % world_size:
        raise ValueError(f"{what} of size {size} does not divide by {world_size} shards")
    block = size // world_size
    return SliceSpec(0, rank * block, (rank + 1) * block, block)


def vocab_split(vocab_size: int, rank: int, world_size: int) -> SliceSpec:
    block = math.ceil(vocab_size / world_size)
    start = min(rank * block, vocab_size)
    return SliceSpec(0, start, min(start + block, vocab_size), block)


def check_divisible(num_heads: int, num_kv_heads: int, world_size: int) -> None:
    """Raises ValueError when heads or KV heads do not split evenly (the launcher refuses this earlier)."""
    for count, what in ((num_heads, "attention heads"), (num_kv_heads, "KV heads")):
        if count % world_size:
            raise ValueError(f"model has {count} {what}, not divisible by {world_size} shards")


def apply_tensor_parallel(model: nn.Module, rank: int, world_size: int) -> dict[str, SliceSpec]:
    """Swap the model's modules for rank-local ones; returns {parameter name: slice} for the sharded loader.

    Parameters not in the plan are replicated (norms, row-parallel biases)."""
    config = model.config  # type: ignore[attr-defined]
    check_divisible(config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads,
                    world_size)
    plan: dict[str, SliceSpec] = {}
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in COLUMN_PARALLEL and isinstance(module, nn.Linear):
            spec = even_split(module.out_features, rank, world_size, name)
            _replace(model, name, nn.Linear(module.in_features, spec.size, bias=module.bias is not None,
                                            dtype=module.weight.dtype, device="meta"))
            plan[f"{name}.weight"] = spec
            if module.bias is not None:
                plan[f"{name}.bias"] = spec
        elif leaf in ROW_PARALLEL and isinstance(module, nn.Linear):
            spec = even_split(module.in_features, rank, world_size, name)
            with torch.device("meta"):
                _replace(model, name, RowParallelLinear(spec.size, module.out_features, module.bias is not None,
                                                        module.weight.dtype))
            plan[f"{name}.weight"] = SliceSpec(1, spec.start, spec.stop, spec.size)
        elif leaf in VOCAB_PARALLEL and isinstance(module, (nn.Embedding, nn.Linear)):
            plan[f"{name}.weight"] = _vocab_module(model, name, module, rank, world_size)
    return plan


def _vocab_module(model: nn.Module, name: str, module: nn.Module, rank: int, world_size: int) -> SliceSpec:
    vocab, hidden = module.weight.shape
    spec = vocab_split(vocab, rank, world_size)
    dtype = module.weight.dtype
    with torch.device("meta"):
        local: nn.Module
        if isinstance(module, nn.Embedding):
            local = VocabParallelEmbedding(spec.size, rank * spec.size, vocab, hidden, dtype)
        else:
            if module.bias is not None:
                raise ValueError(f"{name} has a bias; vocabulary-parallel LM heads with a bias are not supported")
            local = VocabParallelLMHead(spec.size, vocab, hidden, world_size, dtype)
    _replace(model, name, local)
    return spec


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, module)
