"""The step layout models/attention_metadata.py builds: the chunk batch a paged prefill kernel reads."""
from __future__ import annotations

import torch

from textgen_server.models.attention_metadata import build_attention_metadata
from textgen_server.protocol import StepItem


def test_chunk_batch_lays_out_every_chunk_beside_the_decode_rows() -> None:
    """Chunks keep their rows of the flat batch (a decode item between them takes none of theirs), tables are
    padded with block 0, and every token's key count is its position + 1."""
    items = [
        StepItem(1, [5, 6, 7], 16, [4, 9], True),      # a chunk after a cached block (prefix hit)
        StepItem(2, [8], 40, [1, 2, 3], True),         # a decode item: not a chunk
        StepItem(3, [9, 10], 0, [7], False),           # a fresh chunk
    ]
    metadata = build_attention_metadata(items, block_size=16, device=torch.device("cpu"))
    batch = metadata.chunk_batch
    assert batch is not None
    assert batch.query_starts.tolist() == [0, 4] and batch.query_counts.tolist() == [3, 2]
    assert batch.block_tables.tolist() == [[4, 9], [7, 0]]
    assert batch.seq_lens.tolist() == [17, 18, 19, 41, 1, 2]
    assert batch.max_queries == 3
    assert metadata.decode is not None and metadata.decode.token_rows.tolist() == [[3]]


def test_a_pure_decode_step_has_no_chunk_batch() -> None:
    metadata = build_attention_metadata([StepItem(1, [5], 3, [0], True)], block_size=16, device=torch.device("cpu"))
    assert metadata.chunk_batch is None
