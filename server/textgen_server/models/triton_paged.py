"""Paged attention as one Triton kernel: query tokens over their sequence's blocks of the paged KV cache, read in
place through the block table, for the decode step and for prompt chunks alike.

The CUDA candidate (issue 15) beside the gather + SDPA path that models/attention.py runs by default: it reads
each sequence's keys and values where they lie (no copy of the batch's KV into a dense tensor every layer), all
query heads of a key/value head at once (grouped-query attention: each key read once per group), online softmax
over KEYS_PER_ITERATION keys at a time. One kernel, two entry points:

- `paged_decode_attention`: a few queries per sequence (a decode token, or it and its speculative candidates),
  with the context split across programs and merged by log-sum-exp (flash-decoding) so that a batch of one still
  spreads over the GPU. Every shape it depends on is fixed by the call's tensors' shapes (block table width,
  batch), not their values, which is what CUDA graph capture needs.
- `paged_prefill_attention`: every prompt chunk of a step in one launch (variable lengths), each chunk's queries
  tiled across programs, each query causal over the chunk's cached prefix (a prefix-cache hit, or the chunks
  before it) and the chunk up to itself, within the sliding window where the model has one.

models/attention.py's PAGED_DECODE / PAGED_PREFILL name the kernel per device type and phase; this one becomes
CUDA's once `hack/bench-gpu.py` has measured it against gather + SDPA on a GPU. On a CPU the same kernel runs
under Triton's interpreter (TRITON_INTERPRET=1 before triton is imported: the choice is made for the whole
process), which is how the tests check it against SDPA here.
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
# Rows (query tokens x the query heads of a group) per program of a prompt chunk: a 64-row tl.dot keeps the
# tensor cores busy while the float32 accumulator (64 x head dim) still fits in registers.
PREFILL_ROWS = 64


@triton.jit
def _paged_attention_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, starts_ptr, counts_ptr, lens_ptr, out_ptr, lse_ptr,
    scale, window, keys_per_split, splits,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_tb,
    stride_ot, stride_oh, stride_os, stride_lt, stride_lh,
    GROUP: tl.constexpr, QUERIES: tl.constexpr, ROWS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, KEYS: tl.constexpr, FP32: tl.constexpr,
    VARLEN: tl.constexpr,
):  # pragma: no cover - traced by Triton, not run as Python
    # A program: one sequence (block table row), one key/value head, one tile of QUERIES of the sequence's query
    # tokens and one split of its keys. Rows of the matrix products are the tile's queries times the GROUP query
    # heads of the key/value head (row = query * GROUP + head in group); each row sees its own number of keys.
    seq, kv_head, part = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tile, split = part // splits, part % splits
    if VARLEN:  # prompt chunks: the sequence's queries are tokens [start, start + count) of the flat batch
        q_first = tl.load(starts_ptr + seq)
        q_count = tl.load(counts_ptr + seq)
    else:  # decode: QUERIES queries per sequence, sequence after sequence
        q_first = seq * QUERIES
        q_count = QUERIES
    rows = tl.arange(0, ROWS_PAD)
    dims = tl.arange(0, HEAD_DIM_PAD)
    query = tile * QUERIES + rows // GROUP
    row_ok, dim_ok = (rows < GROUP * QUERIES) & (query < q_count), dims < HEAD_DIM
    token = q_first + query
    heads = kv_head * GROUP + rows % GROUP
    # int32 (lens may come as int64): loop bounds and positions stay 32-bit, as with the kernel's own indices
    row_len = tl.load(lens_ptr + token, mask=row_ok, other=0).to(tl.int32)
    seq_len = tl.max(row_len, 0)
    first = split * keys_per_split
    if window > 0:  # keys before every row's window are never attended
        first = tl.maximum(first, tl.min(tl.where(row_ok, row_len, seq_len), 0) - window)
    last = tl.minimum((split + 1) * keys_per_split, seq_len)
    q = tl.load(q_ptr + token[:, None] * stride_qt + heads[:, None] * stride_qh + dims[None, :],
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
    tl.store(out_ptr + token[:, None] * stride_ot + heads[:, None] * stride_oh + split * stride_os + dims[None, :],
             out, mask=row_ok[:, None] & dim_ok[None, :])
    tl.store(lse_ptr + token * stride_lt + heads * stride_lh + split, lse, mask=row_ok)


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
    kv_heads = _check(query, key_cache)
    max_keys = block_tables.shape[1] * key_cache.shape[1]
    splits = num_splits or num_splits_for(batch, kv_heads, max_keys)
    flat = query.reshape(batch * queries, heads, head_dim)
    partial, lse = _launch(flat, key_cache, value_cache, block_tables, seq_lens.reshape(-1), scale, sliding_window,
                           grid=(batch, kv_heads, splits), queries=queries, splits=splits,
                           keys_per_split=-(-max_keys // splits), varlen=None)
    out = merge_splits(partial, lse).view(batch, queries, heads, head_dim)
    return (out[:, 0] if single else out).to(query.dtype)


def paged_prefill_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_starts: torch.Tensor,
    query_counts: torch.Tensor,
    seq_lens: torch.Tensor,
    max_queries: int,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Attention of every prompt chunk of a step, in one launch, over the chunks' keys in the paged cache.

    query [T, H, D]: the step's flattened tokens; chunk c's queries are rows query_starts[c] ..
    query_starts[c] + query_counts[c] - 1 ([C] ints), its blocks block_tables[c] ([C, N], covering its cached
    prefix and the chunk, whose keys are written before attention); seq_lens [T] the keys each token sees (its
    position + 1); max_queries the largest count (the launch grid's size, given so that no device sync reads it).
    Returns [T, H, D] in the query's dtype; rows of no chunk (a step's decode tokens) are left unwritten.
    """
    kv_heads = _check(query, key_cache)
    queries = max(1, PREFILL_ROWS // (query.shape[1] // kv_heads))
    tiles = -(-max_queries // queries)
    partial, lse = _launch(query, key_cache, value_cache, block_tables, seq_lens, scale, sliding_window,
                           grid=(block_tables.shape[0], kv_heads, tiles), queries=queries, splits=1,
                           keys_per_split=block_tables.shape[1] * key_cache.shape[1],
                           varlen=(query_starts, query_counts))
    return partial[:, :, 0].to(query.dtype)


def _check(query: torch.Tensor, key_cache: torch.Tensor) -> int:
    """The key/value head count, after refusing what the kernel cannot run."""
    heads, kv_heads = query.shape[-2], key_cache.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not group evenly over {kv_heads} key/value heads")
    if query.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"the Triton paged attention kernel runs on CUDA devices, not {query.device.type!r}; on a "
                           "CPU only under Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported)")
    return kv_heads


def _launch(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, block_tables: torch.Tensor,
            seq_lens: torch.Tensor, scale: float, sliding_window: int | None, *, grid: tuple[int, int, int],
            queries: int, splits: int, keys_per_split: int,
            varlen: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel over flat queries [T, H, D] on grid (sequences, key/value heads, query tiles x splits: one
    of the two is 1); returns the per-split outputs [T, H, S, D] and log-sum-exps
    [T, H, S] in float32. Integer tensors are read as they come (int32 or int64): no conversion per layer."""
    total, heads, head_dim = query.shape
    query, tables, lens = query.contiguous(), block_tables.contiguous(), seq_lens.contiguous()
    starts, counts = varlen if varlen is not None else (lens, lens)  # unread without VARLEN
    partial = torch.empty(total, heads, splits, head_dim, dtype=torch.float32, device=query.device)
    lse = torch.empty(total, heads, splits, dtype=torch.float32, device=query.device)
    group = heads // key_cache.shape[2]
    pad = lambda n: max(MIN_DOT, 1 << math.ceil(math.log2(n)))  # noqa: E731 - powers of two, as tl.arange needs
    _paged_attention_kernel[grid](
        query, key_cache, value_cache, tables, starts.contiguous(), counts.contiguous(), lens, partial, lse,
        scale, sliding_window or 0, keys_per_split, splits,
        query.stride(0), query.stride(1), key_cache.stride(0), key_cache.stride(1), key_cache.stride(2),
        value_cache.stride(0), value_cache.stride(1), value_cache.stride(2), tables.stride(0),
        partial.stride(0), partial.stride(1), partial.stride(2), lse.stride(0), lse.stride(1),
        GROUP=group, QUERIES=queries, ROWS_PAD=pad(group * queries), HEAD_DIM=head_dim, HEAD_DIM_PAD=pad(head_dim),
        BLOCK_SIZE=key_cache.shape[1], KEYS=KEYS_PER_ITERATION, FP32=query.dtype == torch.float32,
        VARLEN=varlen is not None,
    )
    return partial, lse


def merge_splits(partial: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Combine per-split softmax outputs [T, H, S, D] with their log-sum-exps [T, H, S] into [T, H, D]."""
    if partial.shape[2] == 1:
        return partial[:, :, 0]
    weights = torch.softmax(lse, dim=-1)  # exp(lse_s - logsumexp(lse)); empty splits (-inf) weigh 0
    return (partial * weights.unsqueeze(-1)).sum(dim=2)
