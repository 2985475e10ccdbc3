"""Verify items are batched: every decode item [last, c1..cK] of a step (K may differ, or be 0) is attended to in
one padded [B, 1 + max K] decode batch, not one by one as prompt chunks; each position's logits equal those of
transformers' full forward over the same tokens (float64 tiny models, Mistral with its 32-token sliding window
so the window mask is exercised per query), in a pure verify step and in a step that also carries a prompt chunk.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from textgen_server.models.attention_metadata import build_attention_metadata
from textgen_server.models.kv_cache import BLOCK_SIZE
from textgen_server.protocol import SamplingParams, StepItem, WarmupSpec
from textgen_server.shard.runner import ModelRunner

PROMPT_LENGTHS = (40, 21, 35)      # > 32: Mistral's window cuts the earliest keys
NUM_CANDIDATES = (3, 0, 2)         # a mixed batch: padding rows for the shorter items
BLOCKS_PER_REQUEST = 4


def _blocks(index: int) -> list[int]:
    return list(range(index * BLOCKS_PER_REQUEST, (index + 1) * BLOCKS_PER_REQUEST))


def _logits(runner: ModelRunner, items: list[StepItem]) -> tuple[torch.Tensor, object]:
    assert runner.cache is not None
    metadata = build_attention_metadata(items, BLOCK_SIZE, runner.device)
    with torch.inference_mode():
        hidden = runner.run_model(metadata, runner.cache)
        logits = runner.loaded.model.get_output_embeddings()(hidden[0, metadata.sample_rows])
    return logits, metadata


@pytest.mark.parametrize("with_chunk", [False, True], ids=["pure-verify", "verify+prompt-chunk"])
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_batched_verify_matches_full_forward(arch: str, with_chunk: bool, tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    model_dir: Path = tiny_model_dir(arch, dtype="float64")
    runner = ModelRunner(model_dir)
    runner.warmup(WarmupSpec(128, 512, 512, kv_cache_memory_bytes=32 * runner.loaded.kv_cache_shape().bytes_per_block()))
    generator = torch.Generator().manual_seed(7)
    sequences = [torch.randint(5, 200, (n + 1 + k,), generator=generator).tolist()
                 for n, k in zip(PROMPT_LENGTHS, NUM_CANDIDATES)]
    prefill = [StepItem(i + 1, seq[:n], 0, _blocks(i), True, SamplingParams(), [], n)
               for i, (seq, n) in enumerate(zip(sequences, PROMPT_LENGTHS))]
    _logits(runner, prefill)  # writes the prompts' KV
    verify = [StepItem(i + 1, seq[n:], n, _blocks(i), True, num_speculative=k)
              for i, (seq, n, k) in enumerate(zip(sequences, PROMPT_LENGTHS, NUM_CANDIDATES))]
    chunk_prompt = torch.randint(5, 200, (19,), generator=generator).tolist()
    items = verify + ([StepItem(9, chunk_prompt, 0, _blocks(len(verify)), True, SamplingParams(), [], 19)]
                      if with_chunk else [])
    logits, metadata = _logits(runner, items)

    decode = metadata.decode  # type: ignore[attr-defined]
    assert decode is not None and tuple(decode.token_rows.shape) == (3, 1 + max(NUM_CANDIDATES))
    assert len(metadata.chunks) == (1 if with_chunk else 0)  # type: ignore[attr-defined]
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    expected = []
    with torch.no_grad():
        for seq, k in zip(sequences, NUM_CANDIDATES):
            expected.append(reference(torch.tensor([seq])).logits[0, -(1 + k):])
        if with_chunk:
            expected.append(reference(torch.tensor([chunk_prompt])).logits[0, -1:])
    torch.testing.assert_close(logits, torch.cat(expected), rtol=1e-9, atol=1e-9)
