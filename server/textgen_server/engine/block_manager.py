"""Paged KV-cache bookkeeping with prefix caching: which block ids each sequence owns (no torch).

The KV cache is `num_blocks` blocks of `block_size` token slots; a sequence's block table maps its position
p to slot `p % block_size` of block `block_ids[p // block_size]`. The shard holds the tensors; this class only
hands out ids, so every operation is integer work.

Prefix caching: once a FULL block's tokens are in the KV cache, its content is registered under a chained
key `(parent_content_id, tuple(block_tokens))`, where parent_content_id names the content of the block
before it (0 for the first block). A key thus stands for the whole prefix up to and including that block.
Keys are compared by equality in a dict, so a hash collision can never alias two different prefixes (a
bare 64-bit hash could be collided on purpose by one tenant to read another's cache). Content ids come
from a counter and are never reused, so a key built on an evicted parent can never match again.

Blocks are reference-counted. A block whose count drops to 0 keeps its content while it is registered and
waits in an LRU pool; a later request with the same prefix takes it back (a hit), and a fresh allocation
evicts the least recently freed one only when no unregistered free block is left.
"""
from __future__ import annotations

from collections import OrderedDict

from textgen_server.engine.sequence import Sequence

_ROOT_CONTENT_ID = 0
BlockKey = tuple[int, tuple[int, ...]]


class BlockManager:
    """Hands out KV-cache block ids to sequences; check/act pairs never leave a half-done change."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"BlockManager needs num_blocks >= 1 and block_size >= 1, got num_blocks={num_blocks},"
                f" block_size={block_size}; check the shard's warmup result"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref_counts = [0] * num_blocks
        self._keys: list[BlockKey | None] = [None] * num_blocks
        self._content_ids: list[int | None] = [None] * num_blocks
        self._cache: dict[BlockKey, int] = {}
        self._next_content_id = _ROOT_CONTENT_ID + 1
        # Free blocks without cached content, taken first (a stack: any order is as good).
        self._free_plain: list[int] = list(reversed(range(num_blocks)))
        # Free blocks whose content is cached, least recently freed first: eviction order.
        self._free_cached: OrderedDict[int, None] = OrderedDict()

    # ---- counts -------------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation may take (cached-but-unused blocks count: they are evictable)."""
        return len(self._free_plain) + len(self._free_cached)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Blocks whose content is registered in the prefix cache (in use or not)."""
        return len(self._cache)

    def usage(self) -> float:
        """Fraction of blocks held by sequences, in [0, 1]."""
        return self.num_used_blocks / self.num_blocks

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- allocate (admission) ---------------------------------------------------------------------------
    def can_allocate(self, seq: Sequence) -> bool:
        """Whether `allocate(seq)` would succeed now, counting prefix-cache hits."""
        hit_ids = self._match_prefix(seq)
        num_hits_on_free = sum(1 for block_id in hit_ids if self._ref_counts[block_id] == 0)
        num_fresh = self.num_blocks_for(seq.num_tokens) - len(hit_ids)
        return num_fresh + num_hits_on_free <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Gives `seq` blocks for all its known tokens, reusing its cached prefix.

        Sets seq.num_computed_tokens (and num_cached_tokens) to the cached prefix length. The hit never covers
        the last token, so the shard always computes at least one position and can sample from it.
        """
        if seq.block_ids:
            raise RuntimeError(f"allocate: {seq!r} already holds blocks; free it first (scheduler bug)")
        if not self.can_allocate(seq):
            raise RuntimeError(f"allocate: not enough free blocks for {seq!r}; call can_allocate first")
        hit_ids = self._match_prefix(seq)
        for block_id in hit_ids:
            self._take_hit(block_id)
        seq.block_ids = list(hit_ids)
        seq.num_hashed_blocks = len(hit_ids)
        seq.num_computed_tokens = seq.num_cached_tokens = len(hit_ids) * self.block_size
        self._grow(seq, seq.num_tokens)

    # ---- append (decode) --------------------------------------------------------------------------------
    def can_append(self, seq: Sequence, num_lookahead: int = 0) -> bool:
        """Whether the block table can grow to cover every known token of `seq` plus `num_lookahead` slots."""
        return self._num_missing_blocks(seq, num_lookahead) <= self.num_free_blocks

    def append(self, seq: Sequence, num_lookahead: int = 0) -> None:
        """Grows `seq`'s block table to cover all its known tokens plus `num_lookahead` slots (speculative
        candidates: their KV is written there; slots of rejected ones are overwritten by later tokens)."""
        num_missing = self._num_missing_blocks(seq, num_lookahead)
        if num_missing > self.num_free_blocks:
            raise RuntimeError(f"append: no free block for {seq!r}; call can_append first")
        if num_missing:
            self._grow(seq, seq.num_tokens + num_lookahead)

    # ---- free ---------------------------------------------------------------------------------------------
    def free(self, seq: Sequence) -> None:
        """Releases `seq`'s blocks, last first, so that tail blocks (the least shareable) are evicted first."""
        for block_id in reversed(seq.block_ids):
            self._release(block_id)
        seq.block_ids = []
        seq.num_computed_tokens = seq.num_cached_tokens = seq.num_hashed_blocks = 0

    # ---- prefix cache registration ----------------------------------------------------------------------
    def register_computed_blocks(self, seq: Sequence) -> None:
        """Registers every newly FULL and computed block of `seq`; call after the step that computed it."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        for index in range(seq.num_hashed_blocks, num_full):
            self._register(seq, index)
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, num_full)

    # ---- internals ------------------------------------------------------------------------------------------
    def _match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks holding seq's leading full blocks, stopping before the block with the last token."""
        if not self.enable_prefix_caching or seq.needs_prefill_logprobs:
            return []  # prompt logprobs need every position computed (see Sequence.needs_prefill_logprobs)
        hit_ids: list[int] = []
        parent = _ROOT_CONTENT_ID
        for index in range((seq.num_tokens - 1) // self.block_size):
            block_id = self._cache.get((parent, self._block_tokens(seq, index)))
            if block_id is None:
                break
            hit_ids.append(block_id)
            parent = self._content_id(block_id)
        return hit_ids

    def _block_tokens(self, seq: Sequence, index: int) -> tuple[int, ...]:
        start = index * self.block_size
        return tuple(seq.token_ids[start : start + self.block_size])

    def _content_id(self, block_id: int) -> int:
        content_id = self._content_ids[block_id]
        assert content_id is not None, f"block {block_id} has no content id"
        return content_id

    def _register(self, seq: Sequence, index: int) -> None:
        parent = _ROOT_CONTENT_ID if index == 0 else self._content_id(seq.block_ids[index - 1])
        key = (parent, self._block_tokens(seq, index))
        block_id = seq.block_ids[index]
        existing = self._cache.get(key)
        if existing is not None:
            # Same prefix computed twice (two requests prefilled it at once): keep the first copy cached and
            # let this block chain under the same content id, so later blocks still match.
            self._content_ids[block_id] = self._content_ids[existing]
            return
        self._cache[key] = block_id
        self._keys[block_id] = key
        self._content_ids[block_id] = self._next_content_id
        self._next_content_id += 1

    def _num_missing_blocks(self, seq: Sequence, num_lookahead: int = 0) -> int:
        return max(0, self.num_blocks_for(seq.num_tokens + num_lookahead) - len(seq.block_ids))

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        while len(seq.block_ids) < self.num_blocks_for(num_tokens):
            seq.block_ids.append(self._take_fresh())

    def _take_hit(self, block_id: int) -> None:
        if self._ref_counts[block_id] == 0:
            del self._free_cached[block_id]
        self._ref_counts[block_id] += 1

    def _take_fresh(self) -> int:
        if self._free_plain:
            block_id = self._free_plain.pop()
        else:
            block_id, _ = self._free_cached.popitem(last=False)
            self._evict(block_id)
        self._content_ids[block_id] = None
        self._ref_counts[block_id] = 1
        return block_id

    def _evict(self, block_id: int) -> None:
        key = self._keys[block_id]
        if key is not None and self._cache.get(key) == block_id:
            del self._cache[key]
        self._keys[block_id] = None

    def _release(self, block_id: int) -> None:
        self._ref_counts[block_id] -= 1
        if self._ref_counts[block_id] > 0:
            return
        if self._keys[block_id] is not None:
            self._free_cached[block_id] = None
        else:
            self._content_ids[block_id] = None
            self._free_plain.append(block_id)
