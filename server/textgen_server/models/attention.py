"""The one paged-attention integration, serving every supported architecture.

It is registered in transformers' attention-function registry under ATTENTION_NAME; a model loaded with
`attn_implementation=ATTENTION_NAME` calls `paged_attention_forward` from each attention layer with q/k/v
after rotary embeddings. transformers builds no dense mask for an implementation missing from its mask
registry, so the step metadata (AttentionMetadata, passed as the `textgen_step` forward kwarg, which
transformers forwards down to this function) is the only source of truth about who attends to what.

The kernel is chosen here, once, per device type (KERNELS): torch SDPA (query heads folded on the CPU), over
keys gathered out of the paged cache. Each phase can instead go to a paged kernel that reads the cache in place
through the block tables: decode and speculative verify rows (PAGED_DECODE) and prompt chunks, all of a step in
one variable-length launch (PAGED_PREFILL), per device type. The Triton kernel of models/triton_paged.py is the
CUDA candidate for both, taken into those tables once hack/bench-gpu.py has measured it against the gather on a
GPU.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from textgen_server.models.attention_metadata import AttentionMetadata, ChunkSegment, DecodeBatch
from textgen_server.models.decode_rows import DecodeRows, StepRows
from textgen_server.models.kv_cache import PagedKVCache

ATTENTION_NAME = "textgen_paged"

# (query [B, H, Lq, D], key [B, H_kv, Lk, D], value, mask [B|1, 1, Lq, Lk] bool or None, is_causal, scale)
#   -> [B, H, Lq, D]
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, bool, float], torch.Tensor]


def _sdpa_kernel(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, scale: float
) -> torch.Tensor:
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=True
    )


# Rows of up to this many queries fold their query heads (_grouped_sdpa_kernel): decode rows, speculative
# verify rows (1 + up to 7 candidates).
FOLD_MAX_QUERIES = 8


def _grouped_sdpa_kernel(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, scale: float
) -> torch.Tensor:
    """SDPA with the query heads that share a key/value head folded into the query length (CPU).

    With grouped-query attention (H query heads over H_kv < H key/value heads) torch's CPU SDPA with
    `enable_gqa` runs each query head on its own; decode steps have one query per head, so that is H tiny
    problems. Folding the G = H / H_kv query heads of each key/value head into the query dimension makes it
    H_kv problems of G x Q queries over the same keys, each key read once per group: the bench model's decode
    attention (12 over 4 heads, batch 64, 192 keys) took 1.2 ms per layer against 1.8 ms (hack/bench-attention.py).
    Exact up to float rounding: the same dot products and softmax per query. Only for a few queries per row
    (decode and speculative verify rows): with prompt chunks of 16-512 queries the fold measured 0.9-1.5x, no
    steady gain. The causal mode is positional (query i sees keys <= i) and would not survive the fold."""
    batch, heads, num_queries, head_dim = query.shape
    kv_heads = key.shape[1]
    if is_causal or kv_heads == heads or num_queries > FOLD_MAX_QUERIES:
        return _sdpa_kernel(query, key, value, mask, is_causal, scale)
    groups = heads // kv_heads
    folded = query.reshape(batch, kv_heads, groups * num_queries, head_dim)  # head h = kv * G + g, row g * Q + j
    if mask is not None:
        mask = mask.repeat(1, 1, groups, 1)  # row g * Q + j is query j's mask
    out = F.scaled_dot_product_attention(folded, key, value, attn_mask=mask, scale=scale)
    return out.view(batch, heads, num_queries, head_dim)


KERNELS: dict[str, Kernel] = {"cpu": _grouped_sdpa_kernel, "cuda": _sdpa_kernel}


def select_kernel(device_type: str) -> Kernel:
    """The attention kernel for a device type; the single place a backend is chosen."""
    if device_type not in KERNELS:
        raise ValueError(f"no attention kernel for device type {device_type!r}; supported: {sorted(KERNELS)}")
    return KERNELS[device_type]


# (query [B, Q, H, D], key cache, value cache [num_blocks, block_size, H_kv, D], block tables [B, N], keys per
#  query [B, Q], scale, sliding window) -> [B, Q, H, D]: Q queries per sequence (a decode token and its speculative
#  candidates), reading its blocks through the block table in place
PagedDecodeKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int | None], torch.Tensor]
# (query [T, H, D], key cache, value cache, block tables [C, N], query starts [C], query counts [C], keys per token
#  [T], largest count, scale, sliding window) -> [T, H, D]: every prompt chunk of a step in one launch
PagedPrefillKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float,
     int | None], torch.Tensor]

# Candidates by name: modules with paged_decode_attention and paged_prefill_attention, imported on first use
# (Triton is imported only where one is chosen).
PAGED_CANDIDATES: dict[str, str] = {"triton": "textgen_server.models.triton_paged"}
# The paged kernel each device type uses per phase; none yet: every device gathers (see the module docstring).
PAGED_DECODE: dict[str, str] = {}
PAGED_PREFILL: dict[str, str] = {}


def _paged_module(name: str) -> object:
    if name not in PAGED_CANDIDATES:
        raise ValueError(f"no paged attention kernel {name!r}; candidates: {sorted(PAGED_CANDIDATES)}")
    return importlib.import_module(PAGED_CANDIDATES[name])


def load_paged_decode(name: str) -> PagedDecodeKernel:
    """A candidate's decode kernel by name (benchmarks and tests compare them; serving takes PAGED_DECODE's)."""
    return _paged_module(name).paged_decode_attention  # type: ignore[attr-defined,no-any-return]


def load_paged_prefill(name: str) -> PagedPrefillKernel:
    """A candidate's prefill kernel by name (serving takes PAGED_PREFILL's)."""
    return _paged_module(name).paged_prefill_attention  # type: ignore[attr-defined,no-any-return]


def select_paged_decode(device_type: str) -> PagedDecodeKernel | None:
    """The paged decode kernel for a device type, or None: decode rows gather their blocks for `select_kernel`."""
    name = PAGED_DECODE.get(device_type)
    return None if name is None else load_paged_decode(name)


def select_paged_prefill(device_type: str) -> PagedPrefillKernel | None:
    """The paged prefill kernel for a device type, or None: each chunk gathers its prefix for `select_kernel`."""
    name = PAGED_PREFILL.get(device_type)
    return None if name is None else load_paged_prefill(name)


@dataclass(frozen=True)
class StepContext:
    """What one forward step's attention layers share: the ragged-batch layout, the cache, the kernel, on the CPU
    the decode batch's dense rows (models/decode_rows.py; None: gather the blocks instead), and the paged kernels
    for the decode rows and the prompt chunks (None: gather)."""

    metadata: AttentionMetadata
    cache: PagedKVCache
    kernel: Kernel
    rows: tuple[DecodeRows, StepRows] | None = None
    paged_decode: PagedDecodeKernel | None = None
    paged_prefill: PagedPrefillKernel | None = None


def paged_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    textgen_step: StepContext | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Write this step's keys/values into the paged cache, then attend. query [1, H, T, D] -> [1, T, H, D]."""
    if textgen_step is None:
        raise RuntimeError(f"{ATTENTION_NAME} attention needs the textgen_step forward kwarg (use the ModelRunner)")
    step, layer_idx = textgen_step, module.layer_idx  # type: ignore[attr-defined]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    new_keys, new_values = key[0].transpose(0, 1), value[0].transpose(0, 1)  # [T, H_kv, D]
    step.cache.write(layer_idx, step.metadata.slot_mapping, new_keys, new_values)
    decode = step.metadata.decode
    if not step.metadata.chunks and decode is not None:
        # A pure decode step: rows are already in order, so no scatter into an output buffer is needed.
        attended = _decode_attention(step, layer_idx, decode, query, key, value, scale, sliding_window)
        return (attended if decode.valid is None else attended[decode.valid]).unsqueeze(0), None
    batch = step.metadata.chunk_batch
    if step.paged_prefill is not None and batch is not None:
        # Every chunk in one launch, each over its prefix and itself in place; the decode rows are filled below.
        out = step.paged_prefill(query[0].transpose(0, 1), step.cache.keys[layer_idx], step.cache.values[layer_idx],
                                 batch.block_tables, batch.query_starts, batch.query_counts, batch.seq_lens,
                                 batch.max_queries, scale, sliding_window)  # [T, H, D]
    else:
        out = query.new_empty(query.shape[2], query.shape[1], query.shape[3])  # [T, H, D]
        for chunk in step.metadata.chunks:
            out[chunk.q_start : chunk.q_end] = _chunk_attention(
                step, layer_idx, chunk, query, key, value, scale, sliding_window
            )
    if decode is not None:
        attended = _decode_attention(step, layer_idx, decode, query, key, value, scale, sliding_window)
        rows = decode.token_rows.flatten()
        if decode.valid is not None:
            rows, attended = rows[decode.valid], attended[decode.valid]
        out[rows] = attended
    return out.unsqueeze(0), None


def _chunk_attention(
    step: StepContext,
    layer_idx: int,
    chunk: ChunkSegment,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """Causal attention of a prompt chunk over its cached prefix and itself; returns [n, H, D]."""
    q = query[:, :, chunk.q_start : chunk.q_end]  # [1, H, n, D]
    num_tokens = chunk.q_end - chunk.q_start
    if chunk.start_pos == 0 and sliding_window is None:
        # Nothing cached before the chunk: its own keys suffice and the kernel's causal mode is exact.
        k, v = key[:, :, chunk.q_start : chunk.q_end], value[:, :, chunk.q_start : chunk.q_end]
        return step.kernel(q, k, v, None, True, scale)[0].transpose(0, 1)
    context_len = chunk.start_pos + num_tokens
    # Keys older than the window of the chunk's first query are never attended: skip gathering them.
    first_key = 0 if sliding_window is None else max(0, chunk.start_pos - sliding_window + 1)
    keys, values = step.cache.gather(layer_idx, chunk.block_table.unsqueeze(0))  # [1, L, H_kv, D]
    k = keys[:, first_key:context_len].transpose(1, 2)
    v = values[:, first_key:context_len].transpose(1, 2)
    q_pos = torch.arange(chunk.start_pos, context_len, device=q.device).unsqueeze(1)  # [n, 1]
    k_pos = torch.arange(first_key, context_len, device=q.device).unsqueeze(0)  # [1, L']
    mask = _allowed(q_pos, k_pos, sliding_window)
    return step.kernel(q, k, v, mask[None, None], False, scale)[0].transpose(0, 1)


def _decode_attention(
    step: StepContext,
    layer_idx: int,
    decode: DecodeBatch,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """Q query tokens per request (1, or 1 + speculative candidates) over its cached keys, as one padded batch;
    each query attends causally up to its own position. Returns [B * Q, H, D] in token_rows order (padding
    included: the caller drops it with decode.valid)."""
    batch, num_queries = decode.token_rows.shape
    q = query[0][:, decode.token_rows.flatten()]  # [H, B * Q, D]
    q = q.unflatten(1, (batch, num_queries)).transpose(0, 1)  # [B, H, Q, D]
    if step.rows is not None:
        return _dense_rows_attention(step, layer_idx, decode, q, key, value, scale, sliding_window)
    if step.paged_decode is not None:  # each query sees the keys up to its own position, its row's included
        out = step.paged_decode(q.transpose(1, 2), step.cache.keys[layer_idx], step.cache.values[layer_idx],
                                decode.block_tables, decode.positions + 1, scale, sliding_window)  # [B, Q, H, D]
        return out.flatten(0, 1)
    keys, values = step.cache.gather(layer_idx, decode.block_tables)  # [B, L, H_kv, D]
    k_pos = torch.arange(keys.shape[1], device=q.device).view(1, 1, -1)  # [1, 1, L]
    # Causal over positions: padded table blocks and not-yet-written slots lie beyond every query's position.
    mask = _allowed(decode.positions.unsqueeze(2), k_pos, sliding_window)  # [B, Q, L]
    out = step.kernel(q, keys.transpose(1, 2), values.transpose(1, 2), mask[:, None], False, scale)
    return out.transpose(1, 2).flatten(0, 1)  # [B * Q, H, D]


def _dense_rows_attention(
    step: StepContext,
    layer_idx: int,
    decode: DecodeBatch,
    q: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """_decode_attention over the dense rows (no gather): append this step's keys/values to the rows, attend in
    row order, return in decode-batch order [B * Q, H, D]."""
    assert step.rows is not None
    rows, step_rows = step.rows
    real = decode.token_rows.flatten() if decode.valid is None else decode.token_rows.flatten()[decode.valid]
    keys, values = rows.layer(layer_idx, step_rows, key[0][:, real].transpose(0, 1), value[0][:, real].transpose(0, 1))
    slots = step_rows.slots
    q_rows = torch.empty_like(q)
    q_rows[slots] = q
    positions = torch.empty_like(decode.positions)
    positions[slots] = decode.positions
    k_pos = torch.arange(step_rows.length, device=q.device).view(1, 1, -1)
    mask = _allowed(positions.unsqueeze(2), k_pos, sliding_window)  # [B, Q, L]
    out = step.kernel(q_rows, keys, values, mask[:, None], False, scale)[slots]  # back to decode-batch order
    return out.transpose(1, 2).flatten(0, 1)  # [B * Q, H, D]


def _allowed(q_pos: torch.Tensor, k_pos: torch.Tensor, sliding_window: int | None) -> torch.Tensor:
    """Causal mask, narrowed to the sliding window exactly as transformers does (q - k < window)."""
    mask = k_pos <= q_pos
    if sliding_window is not None:
        mask &= k_pos > q_pos - sliding_window
    return mask


def register_paged_attention() -> str:
    """Register the paged attention with transformers (idempotent); returns its attn_implementation name."""
    AttentionInterface.register(ATTENTION_NAME, paged_attention_forward)
    return ATTENTION_NAME
