"""Paged decode attention as a Triton kernel: a few query tokens per sequence over its blocks of the paged KV cache.

The CUDA candidate for the decode step (issue 15), beside the gather + SDPA path that models/attention.py runs
today: it reads each sequence's keys and values in place through its block table (no copy of the batch's KV into
a dense tensor every layer), for all query heads of a key/value head at once (grouped-query attention: each key is
read once per group), with the context split across programs and merged by log-sum-exp (flash-decoding), so that a
batch of one still spreads over the GPU. Every shape it depends on is fixed by the call's tensors' shapes (block
table width, batch), not their values, which is what CUDA graph capture needs.

Not yet the serving path: models/attention.py's PAGED_DECODE names the in-place decode kernel per device type,
and this one becomes CUDA's only once `hack/bench-gpu.py` has measured it against gather + SDPA on a GPU. On a
CPU the same kernel runs under Triton's interpreter (TRITON_INTERPRET=1 before triton is imported: the choice is
made for the whole process), which is how the tests check it against SDPA here.
"""
import math
import os

import torch
import triton
import triton.language as tl

# Keys per loop iteration and the floor of every tl.dot dimension (Triton's minimum for a matrix product).
KEYS_PER_ITERATION = 32
MIN_DOT = 16
# Splits aim at this many programs in flight (a few per streaming multiprocessor of a large GPU).
TARGET_PROGRAMS = 512
# A split covers at least this many keys: below it the merge costs more than the parallelism gains.
MIN_KEYS_PER_SPLIT = 256


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, lse_ptr,
    scale, window, keys_per_split,
    stride_qb, stride_qq, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_tb,
    stride_nb, stride_ob, stride_oq, stride_oh, stride_os, stride_lb, stride_lq, stride_lh,
    GROUP: tl.constexpr, QUERIES: tl.constexpr, ROWS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, KEYS: tl.constexpr, FP32: tl.constexpr,
):  # pragma: no cover - traced by Triton, not run as Python
    # Rows of the matrix products: the GROUP query heads of this key/value head for each of the QUERIES query
    # tokens of the sequence (row = query * GROUP + head in group); each row sees its own number of keys.
    seq, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = tl.arange(0, ROWS_PAD)
    dims = tl.arange(0, HEAD_DIM_PAD)
    row_ok, dim_ok = rows < GROUP * QUERIES, dims < HEAD_DIM
    query = rows // GROUP
    heads = kv_head * GROUP + rows % GROUP
    row_len = tl.load(lens_ptr + seq * stride_nb + query, mask=row_ok, other=0)
    seq_len = tl.max(row_len, 0)
    first = split * keys_per_split
    if window > 0:  # keys before every row's window are never attended
        first = tl.maximum(first, tl.min(tl.where(row_ok, row_len, seq_len), 0) - window)
    last = tl.minimum((split + 1) * keys_per_split, seq_len)
    q = tl.load(q_ptr + seq * stride_qb + query[:, None] * stride_qq + heads[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    m_i = tl.full([ROWS_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([ROWS_PAD], tl.float32)
    acc = tl.zeros([ROWS_PAD, HEAD_DIM_PAD], tl.float32)
    offsets = tl.arange(0, KEYS)
    for start in range(first, last, KEYS):
        pos = start + offsets
        ok = pos < last
        # int64: block * stride can pass 2**31 elements in a large cache of a small model
        block = tl.load(tables_ptr + seq * stride_tb + pos // BLOCK_SIZE, mask=ok, other=0).to(tl.int64)
        slot = pos % BLOCK_SIZE
        kv_mask = ok[:, None] & dim_ok[None, :]
        k = tl.load(k_ptr + block[:, None] * stride_kb + slot[:, None] * stride_ks + kv_head * stride_kh
                    + dims[None, :], mask=kv_mask, other=0.0)
        if FP32:  # full precision, as SDPA in float32 (Triton's default for float32 is TF32)
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        else:
            scores = tl.dot(q, tl.trans(k)) * scale
        allowed = ok[None, :] & (pos[None, :] < row_len[:, None])  # causal: up to each row's own position
        if window > 0:
            allowed = allowed & (pos[None, :] >= row_len[:, None] - window)
        scores = tl.where(allowed, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        # Rows with no key yet keep m = -inf; subtracting a finite stand-in keeps exp() at 0 instead of NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(scores - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        v = tl.load(v_ptr + block[:, None] * stride_vb + slot[:, None] * stride_vs + kv_head * stride_vh
                    + dims[None, :], mask=kv_mask, other=0.0)
        if FP32:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    has_keys = l_i > 0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, m_i + tl.log(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    tl.store(out_ptr + seq * stride_ob + query[:, None] * stride_oq + heads[:, None] * stride_oh + split * stride_os
             + dims[None, :], out, mask=row_ok[:, None] & dim_ok[None, :])
    tl.store(lse_ptr + seq * stride_lb + query * stride_lq + heads * stride_lh + split, lse, mask=row_ok)


def num_splits_for(batch: int, kv_heads: int, max_keys: int) -> int:
    """Splits of the context per (sequence, key/value head): enough programs to fill a GPU, never a split
    shorter than MIN_KEYS_PER_SPLIT. A function of shapes only (batch, table width), so it is fixed per graph."""
    by_programs = -(-TARGET_PROGRAMS // max(1, batch * kv_heads))
    by_length = max(1, max_keys // MIN_KEYS_PER_SPLIT)
    return max(1, min(by_programs, by_length))


def paged_decode_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Attention of a few query tokens per sequence over its cached keys.

    query [B, H, D] (one query per sequence: decode) or [B, Q, H, D] (Q per sequence: a decode token and its
    speculative candidates, whose keys are already in the cache); seq_lens [B] or [B, Q] int, the keys each query
    sees (its position + 1), at least 1; key_cache / value_cache [num_blocks, block_size, H_kv, D]
    (models/kv_cache.py's layout); block_tables [B, N] int (entries past a sequence's length are never read);
    sliding_window as transformers (query - key < window). Returns the query's shape and dtype. Runs compiled on
    CUDA and under Triton's interpreter on a CPU.
    """
    single = query.dim() == 3
    if single:
        query, seq_lens = query.unsqueeze(1), seq_lens.unsqueeze(1)
    batch, queries, heads, head_dim = query.shape
    _, block_size, kv_heads, _ = key_cache.shape
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not group evenly over {kv_heads} key/value heads")
    if query.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"the Triton paged decode kernel runs on CUDA devices, not {query.device.type!r}; on a CPU "
                           "only under Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported)")
    group = heads // kv_heads
    max_keys = block_tables.shape[1] * block_size
    splits = num_splits or num_splits_for(batch, kv_heads, max_keys)
    keys_per_split = -(-max_keys // splits)
    query = query.contiguous()
    partial = torch.empty(batch, queries, heads, splits, head_dim, dtype=torch.float32, device=query.device)
    lse = torch.empty(batch, queries, heads, splits, dtype=torch.float32, device=query.device)
    tables = block_tables.to(torch.int32).contiguous()
    lens = seq_lens.to(torch.int32).contiguous()
    pad = lambda n: max(MIN_DOT, 1 << math.ceil(math.log2(n)))  # noqa: E731 - powers of two, as tl.arange needs
    _paged_decode_kernel[(batch, kv_heads, splits)](
        query, key_cache, value_cache, tables, lens, partial, lse,
        scale, sliding_window or 0, keys_per_split,
        query.stride(0), query.stride(1), query.stride(2), key_cache.stride(0), key_cache.stride(1),
        key_cache.stride(2), value_cache.stride(0), value_cache.stride(1), value_cache.stride(2), tables.stride(0),
        lens.stride(0), partial.stride(0), partial.stride(1), partial.stride(2), partial.stride(3),
        lse.stride(0), lse.stride(1), lse.stride(2),
        GROUP=group, QUERIES=queries, ROWS_PAD=pad(group * queries), HEAD_DIM=head_dim, HEAD_DIM_PAD=pad(head_dim),
        BLOCK_SIZE=block_size, KEYS=KEYS_PER_ITERATION, FP32=query.dtype == torch.float32,
    )
    out = merge_splits(partial.flatten(0, 1), lse.flatten(0, 1)).view(batch, queries, heads, head_dim)
    return (out[:, 0] if single else out).to(query.dtype)


def merge_splits(partial: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Combine per-split softmax outputs [B, H, S, D] with their log-sum-exps [B, H, S] into [B, H, D]."""
    if partial.shape[2] == 1:
        return partial[:, :, 0]
    weights = torch.softmax(lse, dim=-1)  # exp(lse_s - logsumexp(lse)); empty splits (-inf) weigh 0
    return (partial * weights.unsqueeze(-1)).sum(dim=2)
