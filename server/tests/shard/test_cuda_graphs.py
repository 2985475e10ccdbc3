"""Decode steps through shard/cuda_graphs.py's static buffers and padded batches.

No GPU here, so the capture is `eager_capture` (a stand-in: the "replay" runs the forward pass again over the
same static buffers); everything else is the serving code: the ModelRunner, the buffers, the padding rows and
their spare KV block, the choice of graph per step. The capture itself is checked on CUDA by server/tests/gpu.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from textgen_server.models.kv_cache import PagedKVCache
from textgen_server.protocol import SamplingParams, StepItem, WarmupSpec
from textgen_server.devices import parse_cuda_graph_sizes
from textgen_server.shard.cuda_graphs import eager_capture
from textgen_server.shard.runner import ModelRunner
from textgen_server.testing.runner_driver import BLOCK_SIZE, Driver, DriverRequest

NUM_BLOCKS = 48
SPEC = WarmupSpec(max_input_tokens=96, max_total_tokens=128, max_prefill_tokens=128,
                  max_batch_total_tokens=NUM_BLOCKS * BLOCK_SIZE)


class CountingCapture:
    """eager_capture that counts the replays of each graph size."""

    def __init__(self) -> None:
        self.replays: dict[int, int] = {}

    def __call__(self, forward):
        replay = eager_capture(forward)
        size = len(self.replays)
        self.replays[size] = 0

        def counted() -> torch.Tensor:
            self.replays[size] += 1
            return replay()

        return counted


def _runner(model_dir: Path, graphs: tuple[int, ...] = (), capture=None) -> ModelRunner:
    runner = ModelRunner(model_dir, dtype="float32", cuda_graphs=graphs, graph_capture=capture)
    assert runner.warmup(SPEC).num_blocks == NUM_BLOCKS
    runner.decode_rows = None  # both runners gather (the dense rows are the CPU's own decode path)
    return runner


def _generate(runner: ModelRunner, lengths: list[int], new_tokens: int = 9) -> dict[int, tuple[list[int], list[float]]]:
    """Staggered requests: one joins per step (prompt chunks beside decode rows), then decode steps of 1-5 rows
    as requests finish at different times."""
    driver = Driver(runner, NUM_BLOCKS, chunk_budget=40)
    logprobs: dict[int, list[float]] = {}
    original_step = runner.step

    def step(items: list[StepItem]):
        generations = original_step(items)
        for generation in generations:
            logprobs.setdefault(generation.request_id, []).append(generation.token.logprob)
        return generations

    runner.step = step  # type: ignore[method-assign]
    for i, length in enumerate(lengths):
        prompt = torch.randint(3, 200, (length,), generator=torch.Generator().manual_seed(i)).tolist()
        driver.admit(DriverRequest(i, prompt, max_new_tokens=new_tokens + 2 * i))
        driver.step()
    tokens = driver.run()
    return {rid: (tokens[rid], logprobs[rid]) for rid in tokens}


def test_graph_steps_generate_what_eager_steps_do(tiny_llama_dir: Path) -> None:
    """Greedy tokens equal and logprobs within float rounding, with decode batches of 1 to 5 rows padded to graphs
    of 2, 4 and 8 rows; decode steps take the graphs, steps with prompt chunks do not."""
    capture = CountingCapture()
    lengths = [5, 33, 70, 17, 40]
    expected = _generate(_runner(tiny_llama_dir), lengths)
    actual = _generate(_runner(tiny_llama_dir, (2, 4, 8), capture), lengths)
    assert {rid: t for rid, (t, _) in actual.items()} == {rid: t for rid, (t, _) in expected.items()}
    for rid, (_, logprobs) in actual.items():
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(expected[rid][1]), atol=1e-4, rtol=1e-4)
    # Captured largest first: 8, 4, 2. Decode steps ran 5..1 rows, so every graph replayed.
    replays = dict(zip((8, 4, 2), capture.replays.values()))
    assert all(count > 0 for count in replays.values()), replays


def test_padding_rows_write_only_the_spare_block(tiny_llama_dir: Path) -> None:
    """A step of 3 rows in the graph of 4: the padding row's key/value land in the spare block past the router's
    blocks; no block a request could own changes except the three rows' own slots."""
    runner = _runner(tiny_llama_dir, (4,), eager_capture)
    cache = runner.cache
    assert cache is not None and cache.keys[0].shape[0] == NUM_BLOCKS + 1 and cache.spare_slot() == NUM_BLOCKS * 16
    items = [StepItem(i, [5 + i], 3, [i], True, SamplingParams(), [1, 2, 3], 4) for i in range(3)]
    for keys in cache.keys:
        keys[NUM_BLOCKS].fill_(1.0)  # a sentinel: the padding token's key (token 0 has a zero embedding) is not 1
    before = [k.clone() for k in cache.keys]
    runner.step(items)
    for layer, keys in enumerate(cache.keys):
        changed = (keys != before[layer]).flatten(1).any(dim=1).nonzero().flatten().tolist()
        assert changed == [0, 1, 2, NUM_BLOCKS], changed  # the rows' blocks 0-2 and the spare block


def test_steps_that_do_not_fit_run_eagerly(tiny_llama_dir: Path) -> None:
    """More rows than the largest graph, speculative rows and tables wider than the graphs' stay eager."""
    runner = _runner(tiny_llama_dir, (2,), eager_capture)
    graphs = runner.graphs
    assert graphs is not None and graphs.table_width == 8  # max_total_tokens 128 / 16
    decode = lambda rid, blocks=1: StepItem(rid, [7], 3, list(range(blocks)), True)  # noqa: E731
    assert graphs.graph_size([decode(0)]) == 2
    assert graphs.graph_size([decode(0), decode(1)]) == 2
    assert graphs.graph_size([decode(0), decode(1), decode(2)]) is None
    assert graphs.graph_size([decode(0, blocks=9)]) is None
    prompt = StepItem(0, [7, 8, 9], 0, [0], True, SamplingParams(), [], 3)
    assert graphs.graph_size([prompt]) is None
    assert graphs.graph_size([StepItem(0, [7, 8], 3, [0], True, num_speculative=1)]) is None


def test_graphs_are_refused_off_cuda_without_a_capture(tiny_llama_dir: Path) -> None:
    with pytest.raises(ValueError, match="--cuda-graphs 1,2: CUDA graphs are captured on CUDA devices only, not 'cpu'"):
        ModelRunner(tiny_llama_dir, dtype="float32", cuda_graphs=(1, 2))


def test_parse_batch_sizes() -> None:
    assert parse_cuda_graph_sizes("1,2,4,8,16,32") == (1, 2, 4, 8, 16, 32)
    assert parse_cuda_graph_sizes("8, 2,2") == (2, 8)
    assert parse_cuda_graph_sizes("0") == parse_cuda_graph_sizes("") == ()
    with pytest.raises(ValueError, match="--cuda-graphs 'a,b': expected comma-separated batch sizes"):
        parse_cuda_graph_sizes("a,b")
    with pytest.raises(ValueError, match="must be positive"):
        parse_cuda_graph_sizes("-1")


def test_spare_slot_needs_a_spare_block() -> None:
    from textgen_server.models.kv_cache import KVCacheShape

    cache = PagedKVCache(KVCacheShape(1, 1, 4, 16, torch.float32), 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="no spare block"):
        cache.spare_slot()
