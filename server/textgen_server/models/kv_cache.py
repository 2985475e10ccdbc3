"""The paged KV cache tensors of one shard.

The router's BlockManager owns which blocks belong to which request; this module only holds the memory. Each
layer has a key and a value tensor of shape [num_blocks, block_size, num_kv_heads, head_dim]; a token at
position p of a request with block table `block_ids` lives in slot block_ids[p // block_size] * block_size +
p % block_size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK_SIZE = 16  # tokens per block; the shard reports it and the router's BlockManager uses it


@dataclass(frozen=True)
class KVCacheShape:
    """Per-layer geometry of the cache; everything but num_blocks comes from the model config."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    dtype: torch.dtype

    def bytes_per_block(self) -> int:
        """Bytes one block takes across all layers, keys and values."""
        element_size = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.block_size * self.num_kv_heads * self.head_dim * element_size

    def num_blocks_for(self, memory_bytes: int) -> int:
        """How many whole blocks fit in `memory_bytes`."""
        return memory_bytes // self.bytes_per_block()


class PagedKVCache:
    """Key and value blocks for every layer, allocated once at warmup.

    `num_blocks` are the router's to hand out; `spare_blocks` more follow them, owned by no request: the padding
    rows of a CUDA graph's batch write their keys and values there (shard/cuda_graphs.py)."""

    def __init__(self, shape: KVCacheShape, num_blocks: int, device: torch.device, spare_blocks: int = 0) -> None:
        self.shape = shape
        self.num_blocks = num_blocks
        self.spare_blocks = spare_blocks
        dims = (num_blocks + spare_blocks, shape.block_size, shape.num_kv_heads, shape.head_dim)
        self.keys = [torch.zeros(dims, dtype=shape.dtype, device=device) for _ in range(shape.num_layers)]
        self.values = [torch.zeros(dims, dtype=shape.dtype, device=device) for _ in range(shape.num_layers)]

    @property
    def block_size(self) -> int:
        return self.shape.block_size

    def spare_slot(self) -> int:
        """The first slot of the first spare block."""
        if not self.spare_blocks:
            raise ValueError("this cache has no spare block")
        return self.num_blocks * self.shape.block_size

    def write(self, layer_idx: int, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store key/value [T, H_kv, D] of T new tokens into their slots [T]."""
        num_kv_heads, head_dim = self.shape.num_kv_heads, self.shape.head_dim
        self.keys[layer_idx].view(-1, num_kv_heads, head_dim).index_copy_(0, slots, key)
        self.values[layer_idx].view(-1, num_kv_heads, head_dim).index_copy_(0, slots, value)

    def gather(self, layer_idx: int, block_tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the blocks in block_tables [B, N]: each [B, N * block_size, H_kv, D]."""
        num_seqs = block_tables.shape[0]
        num_kv_heads, head_dim = self.shape.num_kv_heads, self.shape.head_dim
        flat = block_tables.reshape(-1)
        # index_select on the block dimension is a plain row copy, several times faster than advanced indexing.
        keys = self.keys[layer_idx].index_select(0, flat).view(num_seqs, -1, num_kv_heads, head_dim)
        values = self.values[layer_idx].index_select(0, flat).view(num_seqs, -1, num_kv_heads, head_dim)
        return keys, values
