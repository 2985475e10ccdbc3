"""BlockManager: allocation, append across block boundaries, reference counts and freeing (no prefix hits)."""
from __future__ import annotations

import pytest

from engine_testlib import make_seq
from textgen_server.engine import BlockManager


@pytest.mark.parametrize(
    ("num_tokens", "block_size", "expected_blocks"),
    [(1, 4, 1), (3, 4, 1), (4, 4, 1), (5, 4, 2), (16, 4, 4), (17, 16, 2), (300, 16, 19)],
)
def test_allocate_covers_every_known_token(num_tokens: int, block_size: int, expected_blocks: int) -> None:
    manager = BlockManager(num_blocks=32, block_size=block_size)
    seq = make_seq(0, num_tokens)
    assert manager.can_allocate(seq)
    manager.allocate(seq)
    assert len(seq.block_ids) == expected_blocks
    assert len(set(seq.block_ids)) == expected_blocks
    assert seq.num_computed_tokens == 0
    assert manager.num_free_blocks == 32 - expected_blocks


@pytest.mark.parametrize(
    ("num_blocks", "prompt_lengths", "expected_can_allocate"),
    [
        (4, [16], [True]),            # exactly the whole cache
        (4, [17], [False]),           # one token too many
        (4, [8, 8], [True, True]),
        (4, [8, 9], [True, False]),   # the second needs 3 blocks, 2 are left
        (3, [1, 1, 1, 1], [True, True, True, False]),
    ],
)
def test_can_allocate_counts_free_blocks(
    num_blocks: int, prompt_lengths: list[int], expected_can_allocate: list[bool]
) -> None:
    manager = BlockManager(num_blocks=num_blocks, block_size=4)
    for request_id, (length, expected) in enumerate(zip(prompt_lengths, expected_can_allocate)):
        seq = make_seq(request_id, length)
        assert manager.can_allocate(seq) is expected, f"request {request_id} ({length} tokens)"
        if expected:
            manager.allocate(seq)


def test_allocate_without_room_raises_and_changes_nothing() -> None:
    manager = BlockManager(num_blocks=2, block_size=4)
    with pytest.raises(RuntimeError, match="can_allocate"):
        manager.allocate(make_seq(0, 9))
    assert manager.num_free_blocks == 2


@pytest.mark.parametrize(
    ("prompt_len", "num_appended", "expected_blocks"),
    [(4, 1, 2), (3, 1, 1), (4, 4, 2), (4, 5, 3), (1, 15, 4)],
)
def test_append_grows_the_table_only_when_a_block_boundary_is_crossed(
    prompt_len: int, num_appended: int, expected_blocks: int
) -> None:
    manager = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(0, prompt_len)
    manager.allocate(seq)
    for token in range(num_appended):
        seq.token_ids.append(token)
        assert manager.can_append(seq)
        manager.append(seq)
        assert len(seq.block_ids) == -(-seq.num_tokens // 4)
    assert len(seq.block_ids) == expected_blocks


def test_append_needs_a_free_block_at_a_boundary() -> None:
    manager = BlockManager(num_blocks=2, block_size=4)
    first, second = make_seq(0, 4), make_seq(1, 3)
    manager.allocate(first)
    manager.allocate(second)
    second.token_ids.append(1)             # 4 tokens: still inside its block
    assert manager.can_append(second)
    first.token_ids.append(1)              # 5 tokens: needs a second block, none is free
    assert not manager.can_append(first)
    with pytest.raises(RuntimeError, match="can_append"):
        manager.append(first)


def test_free_returns_every_block_and_resets_progress() -> None:
    manager = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    seq = make_seq(0, 10)
    manager.allocate(seq)
    seq.num_computed_tokens = 10
    manager.free(seq)
    assert (seq.block_ids, seq.num_computed_tokens, manager.num_free_blocks) == ([], 0, 8)
    assert manager.usage() == 0.0


def test_usage_is_the_fraction_of_held_blocks() -> None:
    manager = BlockManager(num_blocks=8, block_size=4)
    manager.allocate(make_seq(0, 8))
    assert manager.usage() == pytest.approx(0.25)


@pytest.mark.parametrize(("num_blocks", "block_size"), [(0, 16), (4, 0), (-1, 4)])
def test_invalid_sizes_are_rejected(num_blocks: int, block_size: int) -> None:
    with pytest.raises(ValueError, match="warmup"):
        BlockManager(num_blocks, block_size)
