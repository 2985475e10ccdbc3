"""Pure warmup arithmetic: KV cache sizing and the shape of the largest prefill the limits allow."""
from __future__ import annotations

from textgen_server.models.kv_cache import KVCacheShape
from textgen_server.protocol import WarmupSpec
from textgen_server.shard.errors import CapacityError

DEFAULT_CPU_KV_CACHE_BYTES = 1 << 30  # 1 GiB per pod when the launcher passes no --kv-cache-memory
# Of the device memory still free after loading and the warmup's largest prefill, the share the KV cache takes
# (TGI's TGI_WIGGLE_ROOM): room for what warmup did not run, e.g. the largest decode batch's sampling tensors.
DEVICE_MEMORY_HEADROOM = 0.90


def default_kv_cache_bytes(device_type: str, world_size: int) -> int:
    """The KV budget of one rank when none is given. On the CPU every rank of a pod shares the host's memory, so
    the 1 GiB default is the pod's, split over its ranks (each rank holds 1/N of the KV heads, so the pod holds the
    same number of tokens for any N); on an accelerator each rank has a device of its own and keeps the whole
    default (the dynamic runner on CUDA sizes its cache from the device's free memory instead, TGI's way:
    kv_bytes_from_free_memory)."""
    return DEFAULT_CPU_KV_CACHE_BYTES // world_size if device_type == "cpu" else DEFAULT_CPU_KV_CACHE_BYTES


def kv_bytes_from_free_memory(free_bytes: int, total_bytes: int, memory_fraction: float) -> int:
    """The KV budget on a device sized from its free memory, as TGI sizes it: of `total_bytes` this process may use
    `memory_fraction` (--cuda-memory-fraction); what other processes or the model already took is not free; the
    cache gets DEVICE_MEMORY_HEADROOM of what is left. Call after loading the weights and running the largest
    prefill (the caching allocator keeps that peak reserved, so `free_bytes` already excludes it)."""
    if not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    usable = free_bytes - (1.0 - memory_fraction) * total_bytes
    return max(0, int(usable * DEVICE_MEMORY_HEADROOM))


def warmup_num_blocks(prompt_lengths: list[int], block_size: int) -> int:
    """KV blocks the warmup's prompts fill (each prompt starts a block of its own)."""
    return sum(-(-length // block_size) for length in prompt_lengths)


def plan_num_blocks(spec: WarmupSpec, shape: KVCacheShape, default_memory_bytes: int) -> int:
    """Blocks to allocate: what the memory budget holds, or just enough for --max-batch-total-tokens when set.

    Raises CapacityError (with the numbers and the flag to change) when the limits cannot fit.
    """
    memory_bytes = spec.kv_cache_memory_bytes or default_memory_bytes
    num_blocks = shape.num_blocks_for(memory_bytes)
    capacity = num_blocks * shape.block_size
    if spec.max_batch_total_tokens:
        needed = -(-spec.max_batch_total_tokens // shape.block_size)
        if needed > num_blocks:
            raise CapacityError(
                f"--max-batch-total-tokens {spec.max_batch_total_tokens} needs {needed} KV blocks "
                f"({needed * shape.bytes_per_block()} bytes) but the KV cache memory of {memory_bytes} bytes holds "
                f"{num_blocks} blocks ({capacity} tokens); raise --kv-cache-memory or lower --max-batch-total-tokens"
            )
        num_blocks, capacity = needed, needed * shape.block_size
    for flag, tokens in (("--max-total-tokens", spec.max_total_tokens), ("--max-batch-prefill-tokens", spec.max_prefill_tokens)):
        if tokens > capacity:
            raise CapacityError(
                f"{flag} {tokens} does not fit in the KV cache: {num_blocks} blocks of {shape.block_size} tokens "
                f"hold {capacity} tokens ({memory_bytes} bytes at {shape.bytes_per_block()} bytes per block); "
                f"lower {flag} or raise --kv-cache-memory"
            )
    return num_blocks


def plan_warmup_prompts(spec: WarmupSpec) -> list[int]:
    """Prompt lengths of the largest prefill: max_prefill_tokens split into prompts of at most max_input_tokens,
    no more prompts than max_batch_size."""
    if spec.max_input_tokens <= 0 or spec.max_prefill_tokens <= 0:
        raise CapacityError(
            f"max_input_tokens ({spec.max_input_tokens}) and max_prefill_tokens ({spec.max_prefill_tokens}) must "
            "be positive; check --max-input-tokens and --max-batch-prefill-tokens"
        )
    full, rest = divmod(spec.max_prefill_tokens, spec.max_input_tokens)
    lengths = [spec.max_input_tokens] * full + ([rest] if rest else [])
    return lengths[: spec.max_batch_size] if spec.max_batch_size else lengths
