"""BlockManager prefix caching: chained keys of full blocks, shared references, the last-token cap, LRU eviction."""
from __future__ import annotations

import pytest

from engine_testlib import make_seq, tokens
from textgen_server.engine import BlockManager, Sequence

BLOCK = 4


def computed(manager: BlockManager, seq: Sequence) -> Sequence:
    """Marks every known token as computed (what a finished prefill step does) and registers the blocks."""
    seq.num_computed_tokens = seq.num_tokens
    manager.register_computed_blocks(seq)
    return seq


def cached_sequence(manager: BlockManager, prompt: list[int], request_id: int = 0) -> Sequence:
    seq = make_seq(request_id, prompt)
    manager.allocate(seq)
    return computed(manager, seq)


@pytest.mark.parametrize(
    ("cached_len", "new_prompt_len", "expected_hit_tokens"),
    [
        (12, 13, 12),   # all three cached blocks, the 13th token is computed
        (12, 12, 8),    # same 12 tokens: the block holding the last token is never a hit
        (12, 9, 8),
        (12, 8, 4),     # cap: only whole blocks strictly before the last token
        (12, 4, 0),
        (12, 1, 0),
        (3, 13, 0),     # a partial block is never cached
        (7, 13, 4),
    ],
)
def test_hit_is_capped_before_the_last_token(cached_len: int, new_prompt_len: int, expected_hit_tokens: int) -> None:
    manager = BlockManager(num_blocks=16, block_size=BLOCK)
    shared = tokens(16)
    cached_sequence(manager, shared[:cached_len])
    seq = make_seq(1, shared[:new_prompt_len])
    manager.allocate(seq)
    assert seq.num_computed_tokens == seq.num_cached_tokens == expected_hit_tokens
    assert seq.num_computed_tokens < seq.num_tokens


def test_hits_share_block_ids_and_count_references() -> None:
    manager = BlockManager(num_blocks=16, block_size=BLOCK)
    first = cached_sequence(manager, tokens(10))
    second = make_seq(1, tokens(8) + [1, 2, 3])
    manager.allocate(second)
    assert second.block_ids[:2] == first.block_ids[:2]
    assert second.block_ids[2] not in first.block_ids
    assert manager.num_used_blocks == 3 + 1
    manager.free(first)
    assert manager.num_used_blocks == 2 + 1, "shared blocks stay held while the second sequence uses them"
    manager.free(second)
    assert manager.num_used_blocks == 0


def test_freed_blocks_stay_cached_and_are_hit_again() -> None:
    manager = BlockManager(num_blocks=16, block_size=BLOCK)
    first = cached_sequence(manager, tokens(9))
    block_ids = list(first.block_ids)
    manager.free(first)
    again = make_seq(1, tokens(9))
    assert manager.can_allocate(again)
    manager.allocate(again)
    assert again.block_ids[:2] == block_ids[:2]
    assert again.num_computed_tokens == 8


def test_keys_are_chained_so_equal_blocks_after_different_prefixes_do_not_alias() -> None:
    manager = BlockManager(num_blocks=16, block_size=BLOCK)
    cached_sequence(manager, [1, 1, 1, 1, 5, 6, 7, 8, 9])
    other = make_seq(1, [2, 2, 2, 2, 5, 6, 7, 8, 9])   # same second block, different first block
    manager.allocate(other)
    assert other.num_computed_tokens == 0


def test_blocks_filled_during_decode_are_registered() -> None:
    manager = BlockManager(num_blocks=16, block_size=BLOCK)
    seq = make_seq(0, tokens(3))
    manager.allocate(seq)
    computed(manager, seq)
    assert manager.num_cached_blocks == 0
    for token in (50, 51):                 # decode: position 3 completes block 0
        seq.token_ids.append(token)
        manager.append(seq)
        seq.num_computed_tokens = seq.num_tokens - 1   # the just-sampled token is not computed yet
        manager.register_computed_blocks(seq)
    assert manager.num_cached_blocks == 1
    reader = make_seq(1, tokens(3) + [50, 51, 52])
    manager.allocate(reader)
    assert reader.block_ids[0] == seq.block_ids[0]


def test_lru_eviction_takes_plain_free_blocks_first_then_tail_blocks_first() -> None:
    manager = BlockManager(num_blocks=5, block_size=BLOCK)
    prompt = tokens(13)                   # 3 full blocks + 1 partial: 4 blocks
    seq = cached_sequence(manager, prompt)
    head, middle, tail = seq.block_ids[:3]
    manager.free(seq)
    assert manager.num_cached_blocks == 3
    filler = make_seq(1, 12)              # 3 blocks: the 2 plain ones, then it must evict one cached block
    manager.allocate(filler)
    assert tail in filler.block_ids and head not in filler.block_ids and middle not in filler.block_ids
    manager.free(filler)
    again = make_seq(2, prompt)
    manager.allocate(again)
    assert again.block_ids[:2] == [head, middle]
    assert again.num_computed_tokens == 8, "the evicted tail block must be recomputed"


def test_hits_on_free_cached_blocks_count_against_free_space() -> None:
    manager = BlockManager(num_blocks=4, block_size=BLOCK)
    manager.free(cached_sequence(manager, tokens(12)))   # 3 cached, free blocks
    seq = make_seq(1, tokens(12) + tokens(5, base=9))      # hits 3, needs 2 fresh: 5 > 4 blocks in total
    assert not manager.can_allocate(seq)
    fits = make_seq(2, tokens(12) + tokens(4, base=9))     # hits 3, needs 1 fresh: 4 blocks
    assert manager.can_allocate(fits)
    manager.allocate(fits)
    assert fits.num_computed_tokens == 12


def test_duplicate_content_keeps_the_chain_usable() -> None:
    manager = BlockManager(num_blocks=16, block_size=BLOCK)
    # Two requests prefill the same first block at once (neither could hit the other), then diverge.
    first, second = make_seq(0, tokens(4) + [1] * 5), make_seq(1, tokens(4) + [2] * 5)
    manager.allocate(first)
    manager.allocate(second)
    computed(manager, first)
    computed(manager, second)
    reader = make_seq(2, tokens(4) + [2] * 5)
    manager.allocate(reader)
    assert reader.num_computed_tokens == 8, "second's block 1 chains under the shared content of block 0"
    assert reader.block_ids[1] == second.block_ids[1]


def test_prefix_caching_disabled_never_hits() -> None:
    manager = BlockManager(num_blocks=16, block_size=BLOCK, enable_prefix_caching=False)
    manager.free(cached_sequence(manager, tokens(12)))
    seq = make_seq(1, tokens(12))
    manager.allocate(seq)
    assert (seq.num_computed_tokens, manager.num_cached_blocks) == (0, 0)
