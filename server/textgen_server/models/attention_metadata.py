"""Per-step metadata that tells the paged attention where each item's tokens are and where their KV lives.

A step runs the model on one flattened ragged batch: the token ids of every item, concatenated, as
input_ids [1, T]. Decode items, of one token or of one token plus speculative candidates ([last, c1..cK], a
verify item), are attended to together in one padded batch of B rows x Q query tokens (Q = 1 + the largest K),
each query causally over its cached keys and the row's earlier queries; longer items (prompt chunks) one by one,
causally over their cached prefix plus the chunk (or all chunks in one launch of a paged prefill kernel, with
ChunkBatch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from textgen_server.protocol import StepItem


@dataclass(frozen=True)
class ChunkSegment:
    """A multi-token item: its query rows [q_start, q_end) of the flattened batch, at positions start_pos..."""

    q_start: int
    q_end: int
    start_pos: int
    block_table: torch.Tensor  # [N] the blocks covering positions [0, start_pos + q_end - q_start)


@dataclass(frozen=True)
class DecodeBatch:
    """The decode and verify items of a step, attended to as one padded batch of [B, Q] query tokens.

    A row shorter than Q is padded by repeating its last token (row and position), so padded queries compute a
    valid copy that `valid` drops. Keys beyond a query's position are masked: the candidates' own keys are in the
    cache (written before attention), so query j of a row sees the row's queries 0..j, as in a prompt chunk."""

    token_rows: torch.Tensor     # [B, Q] rows of the flattened batch (padding repeats the row's last one)
    block_tables: torch.Tensor   # [B, N] padded with block 0 (masked out: beyond every query's position)
    positions: torch.Tensor      # [B, Q] the position of each query token
    valid: torch.Tensor | None   # [B * Q] indices of the real queries in token_rows.flatten(); None: all real


@dataclass(frozen=True)
class ChunkBatch:
    """A step's prompt chunks as one variable-length batch, for a paged prefill kernel (one launch for all)."""

    query_starts: torch.Tensor   # [C] each chunk's first row of the flattened batch
    query_counts: torch.Tensor   # [C] its number of tokens
    block_tables: torch.Tensor   # [C, N] padded with block 0 (never read: beyond every query's position)
    seq_lens: torch.Tensor       # [T] the keys each token of the step sees (its position + 1)
    max_queries: int             # the largest count (sizes the launch without reading a device tensor)


@dataclass(frozen=True)
class AttentionMetadata:
    """Everything the attention function needs for one forward step (tensors on the model's device)."""

    slot_mapping: torch.Tensor          # [T] cache slot of each new token
    chunks: list[ChunkSegment]
    decode: DecodeBatch | None
    input_ids: torch.Tensor             # [1, T]
    position_ids: torch.Tensor          # [1, T]
    sample_rows: torch.Tensor           # [S] rows whose logits are needed, in item order (1 + K per speculative item)
    chunk_batch: ChunkBatch | None = None  # the chunks again, batched; None when the step has none


def is_decode_item(item: StepItem) -> bool:
    """A decode or verify item: its last sampled token plus its speculative candidates, nothing of a prompt."""
    return len(item.token_ids) == 1 + item.num_speculative


def build_attention_metadata(items: list[StepItem], block_size: int, device: torch.device) -> AttentionMetadata:
    """Flatten `items` into one ragged batch; check every block table covers the item's positions."""
    token_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    chunks: list[ChunkSegment] = []
    chunk_items: list[tuple[int, StepItem]] = []
    decode_items: list[tuple[int, StepItem]] = []
    sample_rows: list[int] = []
    for item in items:
        _check_item(item, block_size)
        row = len(token_ids)
        item_positions = range(item.start_pos, item.start_pos + len(item.token_ids))
        token_ids.extend(item.token_ids)
        positions.extend(item_positions)
        slots.extend(item.block_ids[p // block_size] * block_size + p % block_size for p in item_positions)
        if is_decode_item(item):
            decode_items.append((row, item))
        else:
            table = torch.tensor(item.block_ids, dtype=torch.long, device=device)
            chunks.append(ChunkSegment(row, row + len(item.token_ids), item.start_pos, table))
            chunk_items.append((row, item))
        if item.sample:  # a speculative item samples at its last token and at each candidate
            end = row + len(item.token_ids)
            sample_rows.extend(range(end - 1 - item.num_speculative, end))
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        chunks=chunks,
        decode=_build_decode_batch(decode_items, device) if decode_items else None,
        input_ids=torch.tensor([token_ids], dtype=torch.long, device=device),
        position_ids=torch.tensor([positions], dtype=torch.long, device=device),
        sample_rows=torch.tensor(sample_rows, dtype=torch.long, device=device),
        chunk_batch=_build_chunk_batch(chunk_items, positions, device) if chunk_items else None,
    )


def _build_chunk_batch(chunk_items: list[tuple[int, StepItem]], positions: list[int],
                       device: torch.device) -> ChunkBatch:
    max_blocks = max(len(item.block_ids) for _, item in chunk_items)
    counts = [len(item.token_ids) for _, item in chunk_items]
    return ChunkBatch(
        query_starts=torch.tensor([row for row, _ in chunk_items], dtype=torch.long, device=device),
        query_counts=torch.tensor(counts, dtype=torch.long, device=device),
        block_tables=torch.tensor([item.block_ids + [0] * (max_blocks - len(item.block_ids))
                                   for _, item in chunk_items], dtype=torch.long, device=device),
        seq_lens=torch.tensor(positions, dtype=torch.long, device=device) + 1,
        max_queries=max(counts),
    )


def _build_decode_batch(decode_items: list[tuple[int, StepItem]], device: torch.device) -> DecodeBatch:
    max_blocks = max(len(item.block_ids) for _, item in decode_items)
    num_queries = max(len(item.token_ids) for _, item in decode_items)
    # Pad with block 0: its keys are masked out because they lie beyond every query's position.
    tables = [item.block_ids + [0] * (max_blocks - len(item.block_ids)) for _, item in decode_items]
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    valid: list[int] = []
    for b, (row, item) in enumerate(decode_items):
        n = len(item.token_ids)
        rows.append([row + min(j, n - 1) for j in range(num_queries)])
        positions.append([item.start_pos + min(j, n - 1) for j in range(num_queries)])
        valid.extend(range(b * num_queries, b * num_queries + n))
    all_valid = len(valid) == len(decode_items) * num_queries
    return DecodeBatch(
        token_rows=torch.tensor(rows, dtype=torch.long, device=device),
        block_tables=torch.tensor(tables, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        valid=None if all_valid else torch.tensor(valid, dtype=torch.long, device=device),
    )


def _check_item(item: StepItem, block_size: int) -> None:
    if not item.token_ids:
        raise ValueError(f"request {item.request_id}: a step item needs at least one token, got none")
    needed = -(-(item.start_pos + len(item.token_ids)) // block_size)
    if len(item.block_ids) < needed:
        raise ValueError(
            f"request {item.request_id}: {len(item.block_ids)} blocks cannot hold positions up to "
            f"{item.start_pos + len(item.token_ids)} with block size {block_size} (need {needed}); "
            "the router must allocate blocks before scheduling tokens"
        )
