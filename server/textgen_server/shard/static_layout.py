"""Padding a step's items to static shapes (engine/buckets.py's rules), as plain StepItems. Pure: no torch.

The model then runs the padded items through the same paged attention as any step:
- prefill items (more than one token) come first, each padded with `PAD_TOKEN`s to the group's sequence bucket,
  followed by dummy rows up to the prefill batch bucket; decode items (one token) follow, up to the decode batch
  bucket with dummy rows;
- every token a real item did not have (its padding) and every dummy row writes its KV into `scratch_block`, a
  block the router never hands out, or into a real item's own slots past its last token, which nothing reads
  before the item's next real token overwrites them (each layer writes a step's KV before it attends);
- decode block tables are all `num_context_blocks` wide (scratch-padded; masked by the context length), so the
  decode shape does not change with the context length.
`real_rows` maps the unpadded layout (the items in order, as build_attention_metadata flattens them) onto rows
of the padded one, so the runner gathers the real rows' hidden states and everything after the model (prompt
logprobs, sampling) sees exactly the rows an unpadded step would have.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from textgen_server.engine.buckets import (BucketConfig, BucketError, DecodeShape, PrefillShape, decode_shape,
                                           prefill_shape)
from textgen_server.protocol import StepItem

PAD_TOKEN = 0
DUMMY_REQUEST_ID = -1


@dataclass(frozen=True)
class PaddedStep:
    """What the model runs for one step, and where the real rows are in it."""

    items: list[StepItem]
    real_rows: list[int]                  # unpadded row i -> padded row real_rows[i]
    prefill: PrefillShape | None
    decode: DecodeShape | None


def _blocks_for(num_positions: int, block_size: int) -> int:
    return -(-num_positions // block_size)


def _padded_prefill(item: StepItem, seq_len: int, scratch_block: int, block_size: int) -> StepItem:
    end = item.start_pos + seq_len
    missing = _blocks_for(end, block_size) - len(item.block_ids)
    return dataclasses.replace(item, token_ids=[*item.token_ids, *[PAD_TOKEN] * (seq_len - len(item.token_ids))],
                               block_ids=[*item.block_ids, *[scratch_block] * max(0, missing)])


def _padded_decode(item: StepItem, config: BucketConfig, scratch_block: int) -> StepItem:
    missing = config.num_context_blocks - len(item.block_ids)
    if missing < 0:
        raise BucketError(f"request {item.request_id} holds {len(item.block_ids)} blocks, more than the "
                          f"{config.num_context_blocks} that --max-total-tokens {config.max_total_tokens} needs")
    return dataclasses.replace(item, block_ids=[*item.block_ids, *[scratch_block] * missing])


def _dummy(num_tokens: int, num_blocks: int, scratch_block: int) -> StepItem:
    return StepItem(DUMMY_REQUEST_ID, [PAD_TOKEN] * num_tokens, 0, [scratch_block] * num_blocks, False)


def pad_step(items: list[StepItem], config: BucketConfig, scratch_block: int, block_size: int) -> PaddedStep:
    """The padded step; raises BucketError when the items fall outside every warmed shape (a scheduler bug)."""
    if any(item.num_speculative for item in items):
        raise BucketError("speculative candidates are not supported with static shapes; run with --speculate 0")
    prefill_items = [item for item in items if len(item.token_ids) > 1]
    decode_items = [item for item in items if len(item.token_ids) == 1]
    prefill = prefill_shape(config, [len(i.token_ids) for i in prefill_items]) if prefill_items else None
    decode = decode_shape(config, len(decode_items)) if decode_items else None
    padded: list[StepItem] = []
    first_row: dict[int, int] = {}        # id(item) -> its first padded row
    if prefill is not None:
        for item in prefill_items:
            first_row[id(item)] = len(padded) * prefill.seq_len
            padded.append(_padded_prefill(item, prefill.seq_len, scratch_block, block_size))
        dummy_blocks = _blocks_for(prefill.seq_len, block_size)
        padded += [_dummy(prefill.seq_len, dummy_blocks, scratch_block)] * (prefill.batch - len(prefill_items))
    decode_start = prefill.batch * prefill.seq_len if prefill is not None else 0
    if decode is not None:
        for index, item in enumerate(decode_items):
            first_row[id(item)] = decode_start + index
            padded.append(_padded_decode(item, config, scratch_block))
        padded += [_dummy(1, config.num_context_blocks, scratch_block)] * (decode.batch - len(decode_items))
    real_rows = [first_row[id(item)] + offset for item in items for offset in range(len(item.token_ids))]
    return PaddedStep(padded, real_rows, prefill, decode)


def warmup_step(config: BucketConfig, shape: PrefillShape | DecodeShape, scratch_block: int,
                block_size: int) -> PaddedStep:
    """A step of dummy rows only, in `shape`, all in the scratch block: what warmup runs to compile a shape."""
    if isinstance(shape, PrefillShape):
        dummies = [_dummy(shape.seq_len, _blocks_for(shape.seq_len, block_size), scratch_block)] * shape.batch
        return PaddedStep(dummies, [], shape, None)
    dummies = [_dummy(shape.num_query_tokens, config.num_context_blocks, scratch_block)] * shape.batch
    return PaddedStep(dummies, [], None, shape)
