"""The Triton paged decode kernel's cases (models/triton_decode.py), against the gather + SDPA path serving uses today.

Not collected by the test run by itself (no test_ prefix): Triton decides once per process, when it is imported,
whether kernels compile for a GPU or run under its CPU interpreter (TRITON_INTERPRET=1), so
`test_triton_decode.py::test_kernel_under_the_interpreter` runs this file in a child pytest with the interpreter
on, and `hack/gpu-check.sh` runs it compiled on a GPU. The interpreter executes the same kernel source (loads,
masks, dot products, the loop over blocks): it checks the kernel's indexing and arithmetic, not GPU speed.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton comes with the CUDA build of torch on Linux")

from textgen_server.models.attention import _allowed, _sdpa_kernel, load_paged_decode  # noqa: E402
from textgen_server.models.triton_decode import paged_decode_attention  # noqa: E402
from textgen_server.protocol import WarmupSpec  # noqa: E402
from textgen_server.shard.runner import ModelRunner  # noqa: E402
from textgen_server.testing.runner_driver import BLOCK_SIZE, Driver, DriverRequest  # noqa: E402

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
needs_kernel = pytest.mark.skipif(not (INTERPRETING or torch.cuda.is_available()),
                                  reason="needs CUDA or TRITON_INTERPRET=1 set before triton is imported")
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu"


def _reference(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, tables: torch.Tensor,
               lens: torch.Tensor, scale: float, window: int | None) -> torch.Tensor:
    """models/attention.py's gather path in float32: the blocks copied out densely, masked SDPA."""
    k = keys[tables].flatten(1, 2).float().transpose(1, 2)  # [B, H_kv, N * block, D]
    v = values[tables].flatten(1, 2).float().transpose(1, 2)
    k_pos = torch.arange(k.shape[2], device=query.device).view(1, 1, -1)
    mask = _allowed((lens - 1).view(-1, 1, 1), k_pos, window)  # [B, 1, L]
    return _sdpa_kernel(query.float().unsqueeze(2), k, v, mask.unsqueeze(1), False, scale)[:, :, 0]


def _case(heads: int, kv_heads: int, head_dim: int, block: int, lens: list[int], width: int,
          dtype: torch.dtype = torch.float32, shared: bool = False, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    num_blocks = len(lens) * width + 3
    keys = torch.randn(num_blocks, block, kv_heads, head_dim, generator=generator).to(dtype)
    values = torch.randn(num_blocks, block, kv_heads, head_dim, generator=generator).to(dtype)
    # Each sequence gets scattered, non-contiguous blocks; `shared` gives every sequence the same first block
    # (a prefix-cache hit), as the router's BlockManager does.
    tables = torch.randperm(num_blocks, generator=generator)[: len(lens) * width].view(len(lens), width)
    if shared:
        tables[:, 0] = tables[0, 0]
    query = torch.randn(len(lens), heads, head_dim, generator=generator).to(dtype)
    to = lambda t: t.to(DEVICE)  # noqa: E731
    return to(query), to(keys), to(values), to(tables), to(torch.tensor(lens))


@needs_kernel
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 64), (12, 4, 64), (8, 2, 48), (6, 1, 32)])
@pytest.mark.parametrize("splits", [1, 3])
def test_matches_the_gather_path(heads: int, kv_heads: int, head_dim: int, splits: int) -> None:
    """Grouped heads (G = 1, 3, 4, 6), a head size that is no power of two, lengths of 1 key, a block's
    worth and partial blocks, the context split or not; tables of scattered blocks."""
    query, keys, values, tables, lens = _case(heads, kv_heads, head_dim, 16, [1, 16, 37, 100], width=8)
    scale = head_dim**-0.5
    out = paged_decode_attention(query, keys, values, tables, lens, scale, num_splits=splits)
    assert out.shape == query.shape and out.dtype == query.dtype
    torch.testing.assert_close(out, _reference(query, keys, values, tables, lens, scale, None), atol=2e-5, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("window", [1, 7, 40, 500])
def test_sliding_window(window: int) -> None:
    """Keys older than the window are skipped exactly as transformers masks them (query - key < window),
    including windows narrower than a block and wider than the context."""
    query, keys, values, tables, lens = _case(8, 2, 64, 16, [3, 50, 120], width=8)
    out = paged_decode_attention(query, keys, values, tables, lens, 0.125, window, num_splits=2)
    torch.testing.assert_close(out, _reference(query, keys, values, tables, lens, 0.125, window), atol=2e-5, rtol=1e-4)


@needs_kernel
def test_small_blocks_shared_prefix_and_default_splits() -> None:
    """A block size of 4, one block shared by every sequence, and the split count the kernel picks itself."""
    query, keys, values, tables, lens = _case(12, 4, 64, 4, [4, 9, 61, 64], width=16, shared=True, seed=3)
    out = paged_decode_attention(query, keys, values, tables, lens, 0.125)
    torch.testing.assert_close(out, _reference(query, keys, values, tables, lens, 0.125, None), atol=2e-5, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("dtype", [
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        INTERPRETING, reason="Triton's interpreter multiplies bfloat16 as raw bits (a 16x16 tl.dot was off by 2.8e10"
                             " here); bfloat16 is checked where the kernel compiles, on CUDA")),
    torch.float16])
def test_half_precision_within_rounding(dtype: torch.dtype) -> None:
    """bf16/fp16 caches (the GPU dtypes): within the error of rounding the inputs and the probabilities, measured
    here as the fp32 reference on the same rounded inputs versus the kernel."""
    query, keys, values, tables, lens = _case(12, 4, 64, 16, [5, 33, 90], width=6, dtype=dtype, seed=1)
    out = paged_decode_attention(query, keys, values, tables, lens, 0.125, num_splits=2)
    assert out.dtype == dtype
    expected = _reference(query, keys, values, tables, lens, 0.125, None)
    error = (out.float() - expected).abs().max().item()
    assert error < 2 * torch.finfo(dtype).eps * expected.abs().max().item() + 1e-2, error


def _generate(model_dir: Path, paged_decode: str | None) -> dict[int, list[int]]:
    """Greedy tokens of staggered requests (chunked prompts, decode beside prefill) on a runner that gathers its
    blocks for decode (the CUDA path before this kernel) or reads them with `paged_decode`."""
    runner = ModelRunner(model_dir, dtype="float32", device=DEVICE)
    runner.warmup(WarmupSpec(max_input_tokens=96, max_total_tokens=128, max_prefill_tokens=128,
                             max_batch_total_tokens=48 * BLOCK_SIZE))
    runner.decode_rows = None  # the CPU's dense rows would take the decode rows instead of either path
    runner.paged_decode = None if paged_decode is None else load_paged_decode(paged_decode)
    driver = Driver(runner, num_blocks=48, chunk_budget=40)
    lengths = [5, 33, 70]
    for i, length in enumerate(lengths):
        prompt = torch.randint(3, 200, (length,), generator=torch.Generator().manual_seed(i)).tolist()
        driver.admit(DriverRequest(i, prompt, max_new_tokens=10))
        driver.step()
    return driver.run()


@needs_kernel
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_runner_generates_the_same_tokens(tiny_model_dir, arch: str) -> None:
    """Through the ModelRunner: the same greedy tokens with the kernel as with the gather path, for grouped
    heads (llama) and a sliding window shorter than the contexts (mistral, window 32)."""
    model_dir = tiny_model_dir(arch, num_hidden_layers=2)
    assert _generate(model_dir, "triton") == _generate(model_dir, None)


@needs_kernel
@pytest.mark.parametrize("window", [None, 9])
def test_verify_rows_see_up_to_their_own_position(window: int | None) -> None:
    """Q = 4 queries per sequence (a decode token and its candidates, padded by repeating the last, as
    DecodeBatch pads shorter rows): query j sees the keys up to its own position, each one its own window."""
    query, keys, values, tables, lens = _case(12, 4, 64, 16, [20, 47, 90], width=8, seed=5)
    queries = torch.randn(3, 4, 12, 64, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    real = [4, 1, 3]  # queries per row before padding
    positions = torch.tensor([[start + min(j, n - 1) for j in range(4)] for start, n in zip([16, 44, 87], real)])
    out = paged_decode_attention(queries, keys, values, tables, positions.to(DEVICE) + 1, 0.125, window, num_splits=2)
    assert out.shape == queries.shape
    for j in range(4):  # each query position against the one-query path's reference
        expected = _reference(queries[:, j], keys, values, tables, positions[:, j].to(DEVICE) + 1, 0.125, window)
        torch.testing.assert_close(out[:, j], expected, atol=2e-5, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_runner_verify_step_logits(tiny_model_dir, arch: str) -> None:
    """A ModelRunner verify step (rows of 1 + 3, 1 + 0 and 1 + 2 tokens, beside a prompt chunk): the same logits
    with the kernel as with the gather path."""
    from textgen_server.models.attention_metadata import build_attention_metadata
    from textgen_server.protocol import SamplingParams, StepItem

    model_dir = tiny_model_dir(arch, num_hidden_layers=2)
    runner = ModelRunner(model_dir, dtype="float32", device=DEVICE)
    runner.warmup(WarmupSpec(max_input_tokens=96, max_total_tokens=128, max_prefill_tokens=128,
                             max_batch_total_tokens=16 * BLOCK_SIZE))
    runner.decode_rows = None
    assert runner.cache is not None
    generator = torch.Generator().manual_seed(11)
    lengths, candidates = (40, 21, 35), (3, 0, 2)
    sequences = [torch.randint(5, 200, (n + 1 + k,), generator=generator).tolist() for n, k in zip(lengths, candidates)]
    blocks = [list(range(4 * i, 4 * i + 4)) for i in range(4)]
    prefill = [StepItem(i, seq[:n], 0, blocks[i], True, SamplingParams(), [], n)
               for i, (seq, n) in enumerate(zip(sequences, lengths))]
    verify = [StepItem(i, seq[n:], n, blocks[i], True, num_speculative=k)
              for i, (seq, n, k) in enumerate(zip(sequences, lengths, candidates))]
    chunk = StepItem(3, torch.randint(5, 200, (19,), generator=generator).tolist(), 0, blocks[3], True,
                     SamplingParams(), [], 19)
    logits = {}
    for kernel in (None, "triton"):
        runner.paged_decode = None if kernel is None else load_paged_decode(kernel)
        with torch.inference_mode():
            runner.run_model(build_attention_metadata(prefill, BLOCK_SIZE, runner.device), runner.cache)
            metadata = build_attention_metadata([*verify, chunk], BLOCK_SIZE, runner.device)
            hidden = runner.run_model(metadata, runner.cache)
            logits[kernel] = runner.loaded.model.get_output_embeddings()(hidden[0, metadata.sample_rows])
    torch.testing.assert_close(logits["triton"], logits[None], atol=1e-4, rtol=1e-4)
