"""CUDA graphs for decode steps (TGI's `--cuda-graphs`): one graph per batch size, captured after warmup.

A decode step of a large model on a GPU is mostly kernel launches at small batch sizes: dozens of kernels per
layer, each a few microseconds of CPU to launch. A CUDA graph replays the whole forward pass as one launch. It
replays fixed addresses and shapes, so every graph reads its inputs from static buffers sized for the largest
graph, and a step of B requests runs the smallest graph of at least B rows:
- rows 0..B-1 are the step's requests (token, position, KV slot, block table padded to a fixed width);
- rows B.. are padding: token 0 at position 0, writing its key and value into a spare block that no request owns
  (PagedKVCache's spare block) and reading block 0's first slot; their outputs are dropped.
Only steps of decode rows with one query each take a graph. The decode attention is whichever the runner uses:
the in-place kernel (models/attention.py PAGED_DECODE) reads only each row's own keys, the gather copies and
attends over the whole padded table width, correct but slower the longer --max-total-tokens is. Prompts,
speculative verify rows, batches above the largest graph and sequences longer than the table width run eagerly.

The capture itself is the `capture` callable (CUDA: `cuda_capture`); `eager_capture` replays by calling the
forward pass again on the same buffers, which lets the CPU tests check everything here but the capture.
"""
from __future__ import annotations

import logging
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable

import torch

from textgen_server.models.attention_metadata import AttentionMetadata, DecodeBatch, is_decode_item
from textgen_server.protocol import StepItem

logger = logging.getLogger("textgen_server.shard")

Forward = Callable[[AttentionMetadata], torch.Tensor]       # metadata -> last hidden states [1, T, hidden]
Capture = Callable[[Callable[[], torch.Tensor]], Callable[[], torch.Tensor]]  # forward -> its replay


def eager_capture(forward: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """No graph: the replay runs the forward pass again over the static buffers (CPU tests of this module)."""
    return forward


def cuda_capture() -> Capture:
    """Capture with torch.cuda.CUDAGraph, all graphs sharing one memory pool (captured largest first, as the
    smaller ones then fit in what the largest reserved). Each forward is first run twice on a side stream, so
    lazy initialisation (Triton's compile, cuBLAS workspaces) happens outside the capture."""
    shared_pool = torch.cuda.graph_pool_handle()

    def capture(forward: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                forward()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=shared_pool):
            output = forward()

        def replay() -> torch.Tensor:
            graph.replay()
            return output

        return replay

    return capture


@dataclass
class _Buffers:
    """The graphs' static inputs, sized for the largest graph."""

    input_ids: torch.Tensor      # [G]
    positions: torch.Tensor      # [G]
    slots: torch.Tensor          # [G]
    block_tables: torch.Tensor   # [G, W]

    def metadata(self, rows: int) -> AttentionMetadata:
        """A decode step over the first `rows` rows, as views of the buffers (the graph's fixed addresses)."""
        device = self.input_ids.device
        return AttentionMetadata(
            slot_mapping=self.slots[:rows],
            chunks=[],
            decode=DecodeBatch(token_rows=torch.arange(rows, device=device).view(rows, 1),
                               block_tables=self.block_tables[:rows], positions=self.positions[:rows].view(rows, 1),
                               valid=None),
            input_ids=self.input_ids[:rows].view(1, rows),
            position_ids=self.positions[:rows].view(1, rows),
            sample_rows=torch.arange(rows, device=device),
        )


class DecodeGraphs:
    """Captured decode steps at `batch_sizes`; `run` replays the smallest graph that holds a step."""

    def __init__(self, forward: Forward, batch_sizes: tuple[int, ...], table_width: int, spare_slot: int,
                 device: torch.device, capture: Capture) -> None:
        if not batch_sizes:
            raise ValueError("DecodeGraphs needs at least one batch size")
        self.batch_sizes = tuple(sorted(batch_sizes))
        self.table_width, self.spare_slot = table_width, spare_slot
        largest = self.batch_sizes[-1]
        self.buffers = _Buffers(
            input_ids=torch.zeros(largest, dtype=torch.long, device=device),
            positions=torch.zeros(largest, dtype=torch.long, device=device),
            slots=torch.full((largest,), spare_slot, dtype=torch.long, device=device),
            block_tables=torch.zeros(largest, table_width, dtype=torch.long, device=device))
        self.replays: dict[int, Callable[[], torch.Tensor]] = {}
        for size in reversed(self.batch_sizes):  # largest first: the smaller graphs reuse its memory pool
            metadata = self.buffers.metadata(size)
            self.replays[size] = capture(lambda metadata=metadata: forward(metadata))
        logger.info("captured decode graphs for batch sizes %s (block tables of %d blocks)",
                    ",".join(map(str, self.batch_sizes)), table_width)

    def graph_size(self, items: list[StepItem]) -> int | None:
        """The graph a step runs in, or None: eager (not all decode rows of one query, too many rows, a block
        table wider than the graphs', a row that samples nothing)."""
        if not items or len(items) > self.batch_sizes[-1]:
            return None
        if not all(is_decode_item(item) and item.num_speculative == 0 and item.sample for item in items):
            return None
        if max(len(item.block_ids) for item in items) > self.table_width:
            return None
        return self.batch_sizes[bisect_left(self.batch_sizes, len(items))]

    def run(self, size: int, metadata: AttentionMetadata) -> torch.Tensor:
        """The step's hidden states [1, B, hidden] from the graph of `size` rows (B = the step's rows)."""
        decode = metadata.decode
        assert decode is not None and not metadata.chunks
        rows, width = decode.block_tables.shape
        buffers = self.buffers
        buffers.input_ids[:rows].copy_(metadata.input_ids[0])
        buffers.positions[:rows].copy_(metadata.position_ids[0])
        buffers.slots[:rows].copy_(metadata.slot_mapping)
        buffers.block_tables[:rows, :width].copy_(decode.block_tables)
        buffers.block_tables[:rows, width:].zero_()  # beyond each row's length: never read, kept tidy
        # Padding rows: token 0 at position 0, written to the spare slot, reading block 0's first slot.
        buffers.input_ids[rows:size].zero_()
        buffers.positions[rows:size].zero_()
        buffers.slots[rows:size].fill_(self.spare_slot)
        buffers.block_tables[rows:size].zero_()
        return self.replays[size]()[:, :rows]
