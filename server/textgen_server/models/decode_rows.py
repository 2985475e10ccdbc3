"""Dense per-request copies of the KV cache for the decode batch: the CPU's substitute for a paged kernel.

Torch on the CPU has no attention kernel that reads a block table, so a decode step used to gather every row's
blocks into a dense [B, L, H_kv, D] tensor, per layer and per step: as many bytes copied each step as the whole
batch's KV cache, which made that copy the largest single cost of a decode step (more than transformers' own
`torch.cat` of its dense cache). Here each request that decodes keeps a row of a dense buffer
[rows, H_kv, L, D] per layer, filled once from the paged cache when it joins and then only appended to: a step
writes its new keys/values into both the paged cache (the source of truth: prefix caching, preemption, prefill
chunks read it) and its rows, and attends over the rows without copying anything.

Invariant: a row's positions [0, valid) equal the paged cache's. A step's rows are the requests of its decode
batch; a request absent from a step, forgotten (finished, cancelled, preempted) or readmitted loses its row, and
a row that is behind (its tokens came through a prefill chunk) is filled from the paged cache first. Rejected
speculative positions are overwritten by later steps and masked until then, exactly as in the paged cache.
Memory: the rows never take more bytes than the paged cache itself (`max_bytes`); a step that would need more
attends through the gather instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from textgen_server.models.kv_cache import PagedKVCache

# Growing means allocating every layer's buffers anew (zeroed: masked positions must hold finite values) and
# copying: a cost of the order of one gather step, so it happens rarely: sizes double, from these minimums.
ROUND = 128     # row lengths are multiples of this many positions
MIN_ROWS = 32


@dataclass(frozen=True)
class StepRows:
    """Where this step's decode queries live in the dense rows (computed once per step, used by every layer)."""

    slots: torch.Tensor          # [B] the row of each decode-batch row
    write_slots: torch.Tensor    # [V] row of each real query (the new keys/values to append)
    write_positions: torch.Tensor  # [V] its position
    length: int                  # positions attended: max position + 1 over the step
    fills: tuple[tuple[int, int, int, tuple[int, ...]], ...]  # (row, from position, to position, block ids)


class DecodeRows:
    """The dense rows of every layer, and which request owns which row."""

    def __init__(self, cache: PagedKVCache, max_bytes: int) -> None:
        self.cache = cache
        self.max_bytes = max_bytes
        self.owner: list[int] = []          # request id of each row in use, rows 0..len-1
        self.valid: list[int] = []          # positions [0, valid) of the row equal the paged cache's
        self.keys: list[torch.Tensor] = []  # per layer [rows_cap, H_kv, len_cap, D]
        self.values: list[torch.Tensor] = []

    def forget(self, request_ids: list[int]) -> None:
        """Drop the rows of these requests (finished, cancelled, preempted, readmitted)."""
        gone = set(request_ids)
        self._keep_only({rid for rid in self.owner if rid not in gone})

    def rewind(self, first_positions: dict[int, int]) -> None:
        """A step that did not use the rows wrote these requests' keys from these positions on (a speculative
        row's rejected candidates rewritten, say): their rows are valid only below them now."""
        for row, request_id in enumerate(self.owner):
            if request_id in first_positions:
                self.valid[row] = min(self.valid[row], first_positions[request_id])

    def clear(self) -> None:
        self.owner, self.valid, self.keys, self.values = [], [], [], []

    def prepare(self, request_ids: list[int], positions: list[list[int]],
                block_tables: list[list[int]]) -> StepRows | None:
        """Rows for this step's decode batch (real queries' positions per row, in batch order); None when they
        would not fit in `max_bytes` (the caller then gathers from the paged cache, and the rows are dropped)."""
        self._keep_only(set(request_ids))
        length = max(max(p) for p in positions) + 1
        if not self._reserve(len(request_ids), length):
            self.clear()
            return None
        row_of = {rid: row for row, rid in enumerate(self.owner)}
        fills: list[tuple[int, int, int, tuple[int, ...]]] = []
        slots, write_slots, write_positions = [], [], []
        for rid, row_positions, table in zip(request_ids, positions, block_tables):
            row = row_of.get(rid)
            if row is None:
                row = len(self.owner)
                self.owner.append(rid)
                self.valid.append(0)
            first = row_positions[0]
            if self.valid[row] < first:  # tokens it got through a prefill chunk: copy them from the paged cache
                fills.append((row, self.valid[row], first, tuple(table)))
            self.valid[row] = row_positions[-1] + 1
            slots.append(row)
            write_slots.extend([row] * len(row_positions))
            write_positions.extend(row_positions)
        device = self.cache.keys[0].device
        as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
        return StepRows(as_tensor(slots), as_tensor(write_slots), as_tensor(write_positions), length, tuple(fills))

    def layer(self, layer_idx: int, step: StepRows, new_keys: torch.Tensor,
              new_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill what this layer's rows lack, append the step's keys/values [V, H_kv, D] (real queries, in
        write order), and return the rows in use: keys and values [rows, H_kv, length, D] (views, no copy)."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        block_size = self.cache.block_size
        for row, start, end, table in step.fills:
            blocks = torch.tensor(table[start // block_size: -(-end // block_size)], dtype=torch.long,
                                  device=keys.device)
            offset = (start // block_size) * block_size
            cached_k, cached_v = self.cache.gather(layer_idx, blocks.unsqueeze(0))  # [1, n * block, H_kv, D]
            keys[row, :, start:end] = cached_k[0, start - offset: end - offset].transpose(0, 1)
            values[row, :, start:end] = cached_v[0, start - offset: end - offset].transpose(0, 1)
        keys[step.write_slots, :, step.write_positions] = new_keys
        values[step.write_slots, :, step.write_positions] = new_values
        rows = len(self.owner)
        return keys[:rows, :, : step.length], values[:rows, :, : step.length]

    def _reserve(self, rows: int, length: int) -> bool:
        """Grow the buffers to hold `rows` x `length` (keeping their content); False if over max_bytes."""
        have_rows = self.keys[0].shape[0] if self.keys else 0
        have_length = self.keys[0].shape[2] if self.keys else 0
        if rows <= have_rows and length <= have_length:
            return True
        new_rows = max(rows, 2 * have_rows, MIN_ROWS)
        new_length = max(-(-length // ROUND) * ROUND, 2 * have_length)
        shape = self.cache.shape
        element = self.cache.keys[0].element_size()
        if 2 * shape.num_layers * new_rows * shape.num_kv_heads * new_length * shape.head_dim * element > self.max_bytes:
            return False
        used, like = len(self.owner), self.cache.keys[0]
        dims = (new_rows, shape.num_kv_heads, new_length, shape.head_dim)
        grown_keys = [like.new_zeros(dims) for _ in range(shape.num_layers)]
        grown_values = [like.new_zeros(dims) for _ in range(shape.num_layers)]
        for old, new in zip(self.keys + self.values, grown_keys + grown_values):  # nothing to copy on the first
            new[:used, :, :have_length] = old[:used]
        self.keys, self.values = grown_keys, grown_values
        return True

    @torch.inference_mode()  # the buffers are inference tensors (made during a step); forget() runs outside one
    def _keep_only(self, wanted: set[int]) -> None:
        """Drop rows whose request is not wanted, moving the last rows into the holes (rows stay 0..n-1)."""
        row = 0
        while row < len(self.owner):
            if self.owner[row] in wanted:
                row += 1
                continue
            last = len(self.owner) - 1
            if row != last:
                length = self.valid[last]
                for keys, values in zip(self.keys, self.values):
                    keys[row, :, :length] = keys[last, :, :length]
                    values[row, :, :length] = values[last, :, :length]
                self.owner[row], self.valid[row] = self.owner[last], self.valid[last]
            self.owner.pop()
            self.valid.pop()
