#!/usr/bin/env python3
"""Decode-step throughput of our paged ModelRunner vs transformers' own forward (sdpa, padded batch).

The measured basis for the attention integration (issue 2): a random ~50M-parameter Llama, a batch of
--batch decode requests with --context cached tokens each. Ours: ModelRunner.step with single-token items
(ragged batch, paged KV cache, lm_head on sampled rows, greedy sampling). Reference: the same model with
attn_implementation="sdpa" and a DynamicCache, one forward of [batch, 1] plus argmax per step.
Then the CPU attention kernel alone (models/attention.py): query heads folded per key/value head
(`_grouped_sdpa_kernel`, the CPU kernel) against torch SDPA with `enable_gqa` (`_sdpa_kernel`), on the bench
server's model shape (12 query over 4 key/value heads, head dim 64), for a decode batch (one query per row) and a
prompt chunk over a cached prefix (masked, as attention.py calls them).
Usage: .venv/bin/python hack/bench-attention.py [--batch 64 --context 192 --steps 10]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from textgen_server.models.attention import _grouped_sdpa_kernel, _sdpa_kernel
from textgen_server.protocol import SamplingParams, StepItem, WarmupSpec
from textgen_server.shard.runner import ModelRunner
from textgen_server.testing import build_tiny_model

MODEL = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=24000)
BLOCK = 16


def bench_ours(path: str, batch: int, context: int, steps: int) -> float:
    runner = ModelRunner(path, dtype="float32")
    blocks_per_seq = -(-(context + steps + 1) // BLOCK)
    runner.warmup(WarmupSpec(context, context + steps + 1, context * 4,
                             max_batch_total_tokens=batch * blocks_per_seq * BLOCK))
    tables = [list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq)) for i in range(batch)]
    prompts = torch.randint(10, 700, (batch, context), generator=torch.Generator().manual_seed(0)).tolist()
    last = {}
    for start in range(0, batch, 4):  # prefill in groups so the step stays within the prefill budget
        items = [StepItem(i, prompts[i], 0, tables[i], True, SamplingParams(), [], context)
                 for i in range(start, min(batch, start + 4))]
        last.update({g.request_id: g.token.id for g in runner.step(items)})
    started = time.perf_counter()
    for step in range(steps):
        items = [StepItem(i, [last[i]], context + step, tables[i], True) for i in range(batch)]
        last = {g.request_id: g.token.id for g in runner.step(items)}
    return batch * steps / (time.perf_counter() - started)


def bench_transformers(path: str, batch: int, context: int, steps: int) -> float:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    prompts = torch.randint(10, 700, (batch, context), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=prompts, past_key_values=cache, use_cache=True, logits_to_keep=1)
        next_ids = out.logits[:, -1].argmax(-1, keepdim=True)
        started = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=next_ids, past_key_values=out.past_key_values, use_cache=True)
            next_ids = out.logits[:, -1].argmax(-1, keepdim=True)
        return batch * steps / (time.perf_counter() - started)


def bench_kernel(kernel: object, shape: tuple[int, int, int, int], calls: int = 50) -> float:
    """Milliseconds per call of `kernel` on query [B, 12, Q, 64] over B x L keys of 4 heads, causal mask."""
    batch, queries, keys, heads = shape
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, queries, 64, generator=generator)
    k, v = (torch.randn(batch, 4, keys, 64, generator=generator) for _ in range(2))
    positions = torch.arange(keys - queries, keys).view(1, queries, 1)
    mask = (torch.arange(keys).view(1, 1, keys) <= positions).expand(batch, queries, keys)[:, None]
    with torch.inference_mode():
        for _ in range(5):
            kernel(q, k, v, mask, False, 0.125)  # type: ignore[operator]
        started = time.perf_counter()
        for _ in range(calls):
            kernel(q, k, v, mask, False, 0.125)  # type: ignore[operator]
    return 1000 * (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_tiny_model(tmp, "llama", **MODEL))
        num_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())
        # Alternate the two and keep each one's best run: the CPU may be shared, and load drifts.
        ours = reference = 0.0
        for _ in range(args.repeats):
            ours = max(ours, bench_ours(path, args.batch, args.context, args.steps))
            reference = max(reference, bench_transformers(path, args.batch, args.context, args.steps))
    print(f"model: random llama, {num_params / 1e6:.1f}M parameters, float32, {torch.get_num_threads()} threads")
    print(f"decode batch {args.batch}, context {args.context}, {args.steps} steps")
    print(f"ours (paged, ragged):         {ours:8.1f} tokens/s")
    print(f"transformers (sdpa, padded):  {reference:8.1f} tokens/s")
    print(f"ratio ours / transformers:    {ours / reference:8.2f}")
    print("CPU attention kernel, query heads 12 over 4 key/value heads (ms per call, best of the repeats):")
    for label, shape in ((f"decode batch {args.batch}, 1 query, {args.context} keys", (args.batch, 1, args.context, 12)),
                         (f"decode batch {args.batch}, 4 queries (speculation), {args.context} keys",
                          (args.batch, 4, args.context, 12)),
                         ("prompt chunk of 128 over 256 cached + own keys (not folded)", (1, 128, 384, 12))):
        grouped = min(bench_kernel(_grouped_sdpa_kernel, shape) for _ in range(args.repeats))
        plain = min(bench_kernel(_sdpa_kernel, shape) for _ in range(args.repeats))
        print(f"  {label}: grouped {grouped:.3f}, enable_gqa {plain:.3f}, ratio {grouped / plain:.2f}")


if __name__ == "__main__":
    main()
