"""The Triton paged attention kernel's cases (models/triton_paged.py: decode and prefill), against the gather + SDPA
path serving uses today.

Not collected by the test run by itself (no test_ prefix): Triton decides once per process, when it is imported,
whether kernels compile for a GPU or run under its CPU interpreter (TRITON_INTERPRET=1), so
`test_triton_paged.py::test_kernel_under_the_interpreter` runs this file in a child pytest with the interpreter
on, and `hack/gpu-check.sh` runs it compiled on a GPU. The interpreter executes the same kernel source (loads,
masks, dot products, the loop over blocks): it checks the kernel's indexing and arithmetic, not GPU speed.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton comes with the CUDA build of torch on Linux")

from textgen_server.models.attention import _allowed, _sdpa_kernel, load_paged_decode, load_paged_prefill  # noqa: E402
from textgen_server.models.triton_paged import PREFILL_ROWS, paged_decode_attention, paged_prefill_attention  # noqa: E402
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


def _generate(model_dir: Path, decode: str | None, prefill: str | None) -> dict[int, list[int]]:
    """Greedy tokens of staggered requests (chunked prompts, decode beside prefill, a prefix-cache hit) on a
    runner that gathers its blocks (the CUDA path before this kernel) or reads them with the named kernels."""
    runner = ModelRunner(model_dir, dtype="float32", device=DEVICE)
    runner.warmup(WarmupSpec(max_input_tokens=96, max_total_tokens=128, max_prefill_tokens=128,
                             max_batch_total_tokens=48 * BLOCK_SIZE))
    runner.decode_rows = None  # the CPU's dense rows would take the decode rows instead of either path
    runner.paged_decode = None if decode is None else load_paged_decode(decode)
    runner.paged_prefill = None if prefill is None else load_paged_prefill(prefill)
    driver = Driver(runner, num_blocks=48, chunk_budget=40)
    prompts = [torch.randint(3, 200, (n,), generator=torch.Generator().manual_seed(i)).tolist()
               for i, n in enumerate([5, 33, 70])]
    for i, prompt in enumerate(prompts):
        driver.admit(DriverRequest(i, prompt, max_new_tokens=10))
        driver.step()
    # The first 32 tokens of request 2's prompt again, then a tail of its own: its first two blocks are cached.
    driver.admit(DriverRequest(3, prompts[2][:32] + prompts[0], max_new_tokens=6),
                 shared_blocks=driver.active[2].block_ids[:2])
    return driver.run()


@needs_kernel
@pytest.mark.parametrize("arch", ["llama", "mistral"])
@pytest.mark.parametrize(("decode", "prefill"), [("triton", None), (None, "triton"), ("triton", "triton")])
def test_runner_generates_the_same_tokens(tiny_model_dir, arch: str, decode: str | None, prefill: str | None) -> None:
    """Through the ModelRunner: the same greedy tokens with the kernel (for decode, prompt chunks or both) as with
    the gather path, for grouped heads (llama) and a sliding window shorter than the contexts (mistral, window
    32); chunked prompts and a prefix-cache hit go through the prefill kernel."""
    model_dir = tiny_model_dir(arch, num_hidden_layers=2)
    assert _generate(model_dir, decode, prefill) == _generate(model_dir, None, None)


def _chunks_reference(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, tables: torch.Tensor,
                      chunks: list[tuple[int, int, int]], scale: float, window: int | None) -> torch.Tensor:
    """models/attention.py's _chunk_attention per chunk in float32: the blocks gathered, causal mask from positions."""
    out = torch.full(query.shape, float("nan"), device=query.device)
    for c, (row, start_pos, count) in enumerate(chunks):
        length = start_pos + count
        k = keys[tables[c]].flatten(0, 1)[:length].float().transpose(0, 1).unsqueeze(0)  # [1, H_kv, L, D]
        v = values[tables[c]].flatten(0, 1)[:length].float().transpose(0, 1).unsqueeze(0)
        q = query[row : row + count].float().transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
        q_pos = torch.arange(start_pos, length, device=query.device).unsqueeze(1)
        mask = _allowed(q_pos, torch.arange(length, device=query.device).unsqueeze(0), window)
        out[row : row + count] = _sdpa_kernel(q, k, v, mask[None, None], False, scale)[0].transpose(0, 1)
    return out


def _prefill_case(heads: int, kv_heads: int, head_dim: int, chunks: list[tuple[int, int]], gap: int = 2,
                  dtype: torch.dtype = torch.float32, block: int = 16, seed: int = 0):
    """Chunks (start position, tokens) laid out in one flat batch with `gap` rows between them (a step's decode
    tokens); each chunk's table has scattered blocks covering its prefix and itself."""
    generator = torch.Generator().manual_seed(seed)
    width = max(-(-(start + count) // block) for start, count in chunks)
    num_blocks = len(chunks) * width + 2
    keys = torch.randn(num_blocks, block, kv_heads, head_dim, generator=generator).to(dtype)
    values = torch.randn(num_blocks, block, kv_heads, head_dim, generator=generator).to(dtype)
    tables = torch.randperm(num_blocks, generator=generator)[: len(chunks) * width].view(len(chunks), width)
    laid_out, row, positions = [], gap, [0] * gap
    for start, count in chunks:
        laid_out.append((row, start, count))
        positions += list(range(start, start + count)) + [0] * gap
        row += count + gap
    query = torch.randn(row, heads, head_dim, generator=generator).to(dtype)
    to = lambda t: t.to(DEVICE)  # noqa: E731
    starts = torch.tensor([r for r, _, _ in laid_out])
    counts = torch.tensor([n for _, _, n in laid_out])
    return (to(query), to(keys), to(values), to(tables), to(starts), to(counts), to(torch.tensor(positions) + 1),
            laid_out)


def _chunk_rows(laid_out: list[tuple[int, int, int]]) -> torch.Tensor:
    return torch.tensor([r for row, _, n in laid_out for r in range(row, row + n)])


# (start position, tokens): a whole prompt of one token, a fresh prompt, a chunk after a cached full block (a
# prefix-cache hit), one starting mid-block and longer than a tile of queries, one shorter than a block deep in.
CHUNKS = [(0, 1), (0, 37), (16, 20), (45, PREFILL_ROWS + 9), (90, 5)]


@needs_kernel
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 64), (12, 4, 64), (8, 2, 48), (6, 1, 32)])
def test_prefill_matches_the_gather_path(heads: int, kv_heads: int, head_dim: int) -> None:
    """Every chunk of a step in one launch: grouped heads (G = 1, 3, 4, 6), a head size that is no power of two,
    chunks over cached prefixes, several query tiles; rows of no chunk are left to the decode path."""
    query, keys, values, tables, starts, counts, lens, laid_out = _prefill_case(heads, kv_heads, head_dim, CHUNKS)
    scale = head_dim**-0.5
    out = paged_prefill_attention(query, keys, values, tables, starts, counts, lens, max(counts).item(), scale)
    assert out.shape == query.shape and out.dtype == query.dtype
    rows = _chunk_rows(laid_out).to(DEVICE)
    expected = _chunks_reference(query, keys, values, tables, laid_out, scale, None)
    torch.testing.assert_close(out[rows], expected[rows], atol=2e-5, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("window", [1, 7, 40, 500])
def test_prefill_sliding_window(window: int) -> None:
    """Each query sees its own window (query - key < window), across the chunk's start and its prefix."""
    query, keys, values, tables, starts, counts, lens, laid_out = _prefill_case(8, 2, 64, CHUNKS, seed=2)
    out = paged_prefill_attention(query, keys, values, tables, starts, counts, lens, max(counts).item(), 0.125,
                                  window)
    rows = _chunk_rows(laid_out).to(DEVICE)
    expected = _chunks_reference(query, keys, values, tables, laid_out, 0.125, window)
    torch.testing.assert_close(out[rows], expected[rows], atol=2e-5, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("dtype", [
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        INTERPRETING, reason="Triton's interpreter multiplies bfloat16 as raw bits; bfloat16 is checked on CUDA")),
    torch.float16])
def test_prefill_half_precision_within_rounding(dtype: torch.dtype) -> None:
    """bf16/fp16 caches and a block size of 4: within the rounding error, as the decode case."""
    chunks = [(0, 23), (12, 30)]
    query, keys, values, tables, starts, counts, lens, laid_out = _prefill_case(12, 4, 64, chunks, dtype=dtype,
                                                                                block=4, seed=4)
    out = paged_prefill_attention(query, keys, values, tables, starts, counts, lens, 30, 0.125)
    assert out.dtype == dtype
    rows = _chunk_rows(laid_out).to(DEVICE)
    expected = _chunks_reference(query, keys, values, tables, laid_out, 0.125, None)[rows]
    error = (out[rows].float() - expected).abs().max().item()
    assert error < 2 * torch.finfo(dtype).eps * expected.abs().max().item() + 1e-2, error


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
    """A ModelRunner verify step (rows of 1 + 3, 1 + 0 and 1 + 2 tokens, beside a prompt chunk, so the decode and
    prefill kernels share one step's output): the same logits with the kernels as with the gather path."""
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
        runner.paged_prefill = None if kernel is None else load_paged_prefill(kernel)
        with torch.inference_mode():
            runner.run_model(build_attention_metadata(prefill, BLOCK_SIZE, runner.device), runner.cache)
            metadata = build_attention_metadata([*verify, chunk], BLOCK_SIZE, runner.device)
            hidden = runner.run_model(metadata, runner.cache)
            logits[kernel] = runner.loaded.model.get_output_embeddings()(hidden[0, metadata.sample_rows])
    torch.testing.assert_close(logits["triton"], logits[None], atol=1e-4, rtol=1e-4)
