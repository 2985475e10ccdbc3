#!/usr/bin/env python
"""Issue 15's GPU benchmark, for a lent NVIDIA machine (`hack/gpu-check.sh --bench` runs it there): the runner on
a random-weight Llama-3-8B-shaped checkpoint built on the device, in bfloat16.

Reported, as JSON (--json) and as lines:
  decode_b1   batch-1 decode time per token against the memory-bandwidth floor (weight bytes / the device's
              copy bandwidth, measured in the same run by a device-to-device copy); goal: floor/ours >= 0.85
  serve_N     N concurrent requests (prompt --prompt-tokens, output --output-tokens, all arriving at once) through
              the ModelRunner and the repository's naive driver (testing/runner_driver.py, chunked prefill of
              --prefill-budget tokens per step): output tokens/s, TTFT p50/p99; and transformers' continuous
              batching (`generate_batch`) on the same model and GPU: tokens/s, TTFT; goal: ours/transformers >= 1.5
  attention   the decode attention of one layer alone, per kernel (`gather`, the blocks copied out for SDPA, as
              serving does today, and models/attention.py's paged candidates: `triton`, models/triton_paged.py
              reading them in place), at batch 1 and each --concurrency, context prompt + output: microseconds
  prefill_attention  one layer's attention (KV write included) of a step of prompt chunks, per kernel: 8 fresh
              prompts of --prompt-tokens / 8 (the gather path's causal SDPA needs no gather there), and 4 chunks
              of --prompt-tokens / 4 each after a cached prefix as long (prefix-cache hits): microseconds
Both decode_b1 and serve_N run once per kernel of --kernels (a paged candidate serves decode rows and prompt
chunks), each eager and with decode steps replayed as CUDA graphs (--cuda-graphs sizes; shard/cuda_graphs.py),
and transformers once, against the best: the measurement that chooses models/attention.py's PAGED_DECODE and
PAGED_PREFILL for CUDA and whether graphs become the default.
The KV cache is sized from the device's free memory (the CUDA path of shard/warmup.py). The serving loop here is
the driver, not the HTTP server: it measures the shard, which is what the GPU changes.
On a machine without CUDA, `--device cpu` with small sizes checks the script itself, e.g.
`.venv/bin/python hack/bench-gpu.py --device cpu --dtype float32 --layers 2 --hidden-size 256
 --intermediate-size 512 --heads 4 --kv-heads 2 --concurrency 8 --prompt-tokens 64 --output-tokens 16`.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=4096)
    parser.add_argument("--intermediate-size", type=int, default=14336)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=128256)
    parser.add_argument("--concurrency", default="64,128", help="comma-separated numbers of concurrent requests")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--prefill-budget", type=int, default=8192, help="prompt tokens per step (chunked prefill)")
    parser.add_argument("--skip-transformers", action="store_true", help="only our runner")
    parser.add_argument("--cuda-graphs", default="1,2,4,8,16,32",
                        help="batch sizes captured as CUDA graphs for the graphs runs of each kernel (TGI's default);"
                             " 0: eager only (on a CPU the capture is the tests' eager stand-in)")
    parser.add_argument("--kernels", default=None,
                        help="comma-separated: gather (today's path) and/or the paged attention candidates of"
                             " models/attention.py (triton), each for decode rows and prompt chunks; default"
                             " gather,triton on CUDA, gather on a CPU")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textgen-bench-gpu")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device; use --device cpu with small sizes to check the script")
    args.sizes = [int(n) for n in args.concurrency.split(",")]
    args.kernels = (args.kernels or ("gather,triton" if args.device == "cuda" else "gather")).split(",")
    from textgen_server.devices import parse_cuda_graph_sizes
    from textgen_server.models.attention import PAGED_CANDIDATES

    unknown = sorted(set(args.kernels) - {"gather", *PAGED_CANDIDATES})
    if unknown:
        parser.error(f"--kernels: unknown {unknown}; choose from gather, {', '.join(PAGED_CANDIDATES)}")
    try:
        args.graph_sizes = parse_cuda_graph_sizes(args.cuda_graphs)
    except ValueError as error:
        parser.error(str(error))
    return args


def use_graphs(runner: Any, spec: Any, args: argparse.Namespace, on: bool) -> None:
    """Capture the decode graphs for the runner's current kernel (graphs bake the kernel in), or drop them."""
    from textgen_server.shard.cuda_graphs import eager_capture

    runner.graphs = None
    if on:
        runner.graph_capture = None if args.device == "cuda" else eager_capture
        runner.graphs = runner._capture_graphs(runner.cache, spec)


def _time_us(call: Callable[[], Any], device: str, calls: int = 20) -> float:
    """Microseconds per call, after 3 untimed calls."""
    for _ in range(3):
        call()
    _sync(device)
    started = time.perf_counter()
    for _ in range(calls):
        call()
    _sync(device)
    return 1e6 * (time.perf_counter() - started) / calls


def use_kernel(runner: Any, name: str) -> None:
    """Point the runner's decode rows and prompt chunks at a paged candidate, or back at the gather ("gather")."""
    from textgen_server.models.attention import load_paged_decode, load_paged_prefill

    runner.paged_decode = None if name == "gather" else load_paged_decode(name)
    runner.paged_prefill = None if name == "gather" else load_paged_prefill(name)


def attention_kernels(runner: Any, num_blocks: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Microseconds per call of one layer's decode attention, per kernel and batch (context prompt + output)."""
    from textgen_server.models.attention import _decode_attention, StepContext
    from textgen_server.models.attention_metadata import DecodeBatch

    cache, context = runner.cache, args.prompt_tokens + args.output_tokens
    blocks_per_seq = -(-context // cache.block_size)
    config = runner.loaded.config
    head_dim = config.hidden_size // config.num_attention_heads
    results: dict[str, dict[str, float]] = {}
    for batch in [1, *args.sizes]:
        if batch * blocks_per_seq > num_blocks:
            continue
        generator = torch.Generator().manual_seed(batch)
        tables = torch.randperm(num_blocks, generator=generator)[: batch * blocks_per_seq].view(batch, -1)
        decode = DecodeBatch(token_rows=torch.arange(batch).view(batch, 1).to(args.device),
                             block_tables=tables.to(args.device),
                             positions=torch.full((batch, 1), context - 1, device=args.device), valid=None)
        query = torch.randn(1, config.num_attention_heads, batch, head_dim, device=args.device,
                            dtype=cache.keys[0].dtype)
        row: dict[str, float] = {}
        for name in args.kernels:
            use_kernel(runner, name)
            step = StepContext(None, cache, runner.kernel, None, runner.paged_decode)  # type: ignore[arg-type]
            call = lambda: _decode_attention(step, 0, decode, query, query, query, head_dim**-0.5, None)  # noqa: E731
            try:
                row[name] = _time_us(call, args.device)
            except Exception as error:  # noqa: BLE001 - recorded: the other kernels still get measured
                row[name] = float("nan")
                print(f"attention batch {batch}, {name}: {type(error).__name__}: {error}", flush=True)
        results[f"batch_{batch}"] = row
    return results


def prefill_kernels(runner: Any, num_blocks: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Microseconds per call of one layer's attention over a step of prompt chunks (the KV write included), per
    kernel: fresh prompts, and chunks after a cached prefix of their own length."""
    from types import SimpleNamespace

    from textgen_server.models.attention import StepContext, paged_attention_forward
    from textgen_server.models.attention_metadata import build_attention_metadata
    from textgen_server.protocol import StepItem

    cache, config = runner.cache, runner.loaded.config
    head_dim = config.hidden_size // config.num_attention_heads
    cases = {"fresh_8": (8, 0), "prefix_hit_4": (4, 1)}  # chunks, cached prefix per chunk (in chunk lengths)
    results: dict[str, dict[str, float]] = {}
    for case, (chunks, prefix) in cases.items():
        length = max(1, args.prompt_tokens // chunks)
        per_chunk = -(-(length * (1 + prefix)) // cache.block_size)
        if chunks * per_chunk > num_blocks:
            continue
        items = [StepItem(i, [3] * length, length * prefix, list(range(i * per_chunk, (i + 1) * per_chunk)), False)
                 for i in range(chunks)]
        metadata = build_attention_metadata(items, cache.block_size, torch.device(args.device))
        total, dtype = chunks * length, cache.keys[0].dtype
        query = torch.randn(1, config.num_attention_heads, total, head_dim, device=args.device, dtype=dtype)
        key = torch.randn(1, config.num_key_value_heads, total, head_dim, device=args.device, dtype=dtype)
        layer = SimpleNamespace(layer_idx=0)
        row: dict[str, float] = {}
        for name in args.kernels:
            use_kernel(runner, name)
            step = StepContext(metadata, cache, runner.kernel, None, None, runner.paged_prefill)
            call = lambda: paged_attention_forward(layer, query, key, key, None, textgen_step=step)  # noqa: E731
            try:
                row[name] = _time_us(call, args.device)
            except Exception as error:  # noqa: BLE001 - recorded: the other kernels still get measured
                row[name] = float("nan")
                print(f"prefill attention {case}, {name}: {type(error).__name__}: {error}", flush=True)
        results[case] = row
    return results


def build_model(args: argparse.Namespace) -> Path:
    """A random-weight Llama of the given shape, created on the device (fast) and saved as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = args.workdir / (f"llama-l{args.layers}-h{args.hidden_size}-i{args.intermediate_size}-a{args.heads}"
                           f"-kv{args.kv_heads}-v{args.vocab_size}-{args.dtype}")
    if (path / "config.json").exists():
        return path
    config = LlamaConfig(hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, vocab_size=args.vocab_size,
                         max_position_embeddings=max(8192, args.prompt_tokens + args.output_tokens),
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, rope_theta=500000.0)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, args.dtype))  # initialised in the served dtype: no float32 copy
    try:
        with torch.device(args.device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(path)
    del model
    return path


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a device-to-device copy, counting the bytes read and the bytes written."""
    source = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    _sync(device)
    started = time.perf_counter()
    for _ in range(10):
        target.copy_(source)
    _sync(device)
    return 2 * source.numel() * 10 / (time.perf_counter() - started)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build_runner(path: Path, args: argparse.Namespace, max_total: int) -> Any:
    from textgen_server.protocol import WarmupSpec
    from textgen_server.shard.runner import ModelRunner

    from textgen_server.shard.cuda_graphs import eager_capture

    probe = (lambda: torch.cuda.mem_get_info()) if args.device == "cuda" else None
    # Graph sizes give the cache its spare block; the graphs themselves are captured per kernel (use_graphs), so
    # the warmup's own capture is the free stand-in rather than real graphs that would be dropped at once.
    runner = ModelRunner(path, dtype=args.dtype, device=args.device, device_memory=probe,
                         cuda_graphs=args.graph_sizes, graph_capture=eager_capture)
    spec = WarmupSpec(max_input_tokens=args.prompt_tokens, max_total_tokens=max_total,
                      max_prefill_tokens=args.prefill_budget)
    result = runner.warmup(spec)
    runner.graphs = runner.decode_rows = None  # dense rows are CPU-only: a CPU check runs the decode path CUDA runs
    return runner, result.num_blocks, spec


def decode_batch1(runner: Any, num_blocks: int, args: argparse.Namespace, weight_bytes: int,
                  bandwidth: float) -> dict[str, float]:
    from textgen_server.testing.runner_driver import Driver, DriverRequest

    driver = Driver(runner, num_blocks, chunk_budget=args.prefill_budget)
    driver.admit(DriverRequest(1, list(range(3, 3 + args.prompt_tokens)), max_new_tokens=args.output_tokens))
    driver.step()  # the prefill
    times = []
    while driver.active:
        started = time.perf_counter()
        driver.step()  # the runner returns Python ints: the step has finished on the device
        times.append(time.perf_counter() - started)
    runner.clear()
    per_token = statistics.median(times)
    floor = weight_bytes / (bandwidth / 2)  # reading the weights once per token, at the copy's read rate
    return {"per_token_ms": 1e3 * per_token, "floor_ms": 1e3 * floor, "floor_over_ours": floor / per_token}


def serve(runner: Any, num_blocks: int, args: argparse.Namespace, count: int) -> dict[str, float]:
    from textgen_server.testing.runner_driver import Driver, DriverRequest

    driver = Driver(runner, num_blocks, chunk_budget=args.prefill_budget)
    requests = [DriverRequest(i, _prompt(args, i), args.output_tokens) for i in range(count)]
    started = time.perf_counter()
    for request in requests:
        driver.admit(request)
    first: dict[int, float] = {}
    while driver.active:
        driver.step()
        now = time.perf_counter() - started
        for request in requests:
            if request.generated and request.request_id not in first:
                first[request.request_id] = now
    wall = time.perf_counter() - started
    runner.clear()
    ttft = sorted(first.values())
    return {"tokens_per_s": count * args.output_tokens / wall, "ttft_p50_s": _pct(ttft, 50),
            "ttft_p99_s": _pct(ttft, 99), "wall_s": wall}


def transformers_cb(path: Path, args: argparse.Namespace, count: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    config = GenerationConfig(max_new_tokens=args.output_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    ids = [_prompt(args, i) for i in range(count)]
    with torch.no_grad():
        model.generate_batch(inputs=ids[:2], generation_config=config, max_new_tokens=2)
        started = time.perf_counter()
        outputs = model.generate_batch(inputs=ids, generation_config=config, record_timestamps=True)
        wall = time.perf_counter() - started
    ttft = sorted((o.timestamps[0] - o.created_time) if o.timestamps else wall for o in outputs.values())
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    del model
    return {"tokens_per_s": tokens / wall, "ttft_p50_s": _pct(ttft, 50), "ttft_p99_s": _pct(ttft, 99), "wall_s": wall}


def _prompt(args: argparse.Namespace, index: int) -> list[int]:
    """The same prompt for both systems: --prompt-tokens ids, distinct per request, inside the vocabulary."""
    return [3 + (index * 7 + j) % (args.vocab_size - 3) for j in range(args.prompt_tokens)]


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = build_model(args)
    max_total = args.prompt_tokens + args.output_tokens
    runner, num_blocks, spec = build_runner(path, args, max_total)
    weight_bytes = sum(p.numel() * p.element_size() for p in runner.loaded.model.parameters())
    bandwidth = copy_bandwidth(args.device)
    figures: dict[str, Any] = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                               "weight_bytes": weight_bytes, "copy_bytes_per_s": bandwidth, "kv_blocks": num_blocks,
                               "attention_us": attention_kernels(runner, num_blocks, args),
                               "prefill_attention_us": prefill_kernels(runner, num_blocks, args), "kernels": {}}
    print(f"{figures['device']}: {weight_bytes / 1e9:.2f} GB of weights, copy {bandwidth / 1e12:.2f} TB/s, "
          f"{num_blocks} KV blocks")
    for batch, row in figures["attention_us"].items():
        print(f"attention {batch}: " + ", ".join(f"{name} {us:.1f} us" for name, us in row.items()), flush=True)
    for case, row in figures["prefill_attention_us"].items():
        print(f"prefill attention {case}: " + ", ".join(f"{name} {us:.1f} us" for name, us in row.items()), flush=True)

    def save() -> None:  # after every figure: a device call cut short by its time limit still returns the rest
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2))

    save()
    graph_modes = [False, True] if args.graph_sizes else [False]
    for kernel, graphs in [(kernel, graphs) for kernel in args.kernels for graphs in graph_modes]:
        name = kernel + ("+graphs" if graphs else "")
        try:  # one configuration failing (a capture error, say) must not cost the others' figures
            measure_config(runner, num_blocks, spec, args, kernel, graphs, weight_bytes, bandwidth,
                           figures["kernels"].setdefault(name, {}), save)
        except Exception as error:  # noqa: BLE001 - recorded in the JSON and printed, then the next one
            figures["kernels"][name]["error"] = f"{type(error).__name__}: {error}"
            print(f"[{name}] failed: {figures['kernels'][name]['error']}", flush=True)
            save()
    largest = f"serve_{args.sizes[-1]}"
    measured = [name for name, row in figures["kernels"].items() if largest in row]
    if not measured:
        raise SystemExit("no configuration completed; see the errors above")
    best = max(measured, key=lambda name: figures["kernels"][name][largest]["tokens_per_s"])
    figures["best_kernel"] = best
    figures["recommended"] = recommend(figures, args.kernels)
    print("recommended: " + ", ".join(f"{key} = {value}" for key, value in figures["recommended"].items()), flush=True)
    figures["decode_b1"] = figures["kernels"][best]["decode_b1"]
    for count in args.sizes:
        figures[f"serve_{count}"] = {"ours": figures["kernels"][best][f"serve_{count}"], "kernel": best}
    save()
    # Our KV cache holds most of the device: free it before transformers loads its own copy of the model.
    del runner
    if args.device == "cuda":
        torch.cuda.empty_cache()
    for count in [] if args.skip_transformers else args.sizes:
        row = figures[f"serve_{count}"]
        theirs = transformers_cb(path, args, count)
        row["transformers_cb"] = theirs
        row["ours_over_transformers"] = row["ours"]["tokens_per_s"] / theirs["tokens_per_s"]
        print(f"serve_{count}: transformers cb {theirs['tokens_per_s']:.0f} tok/s, TTFT p50 {theirs['ttft_p50_s']:.2f}"
              f" s p99 {theirs['ttft_p99_s']:.2f} s: ours x{row['ours_over_transformers']:.2f} (goal 1.5)", flush=True)
        save()


def recommend(figures: dict[str, Any], kernels: list[str]) -> dict[str, str]:
    """What the figures choose for CUDA: PAGED_DECODE by the best serving configuration at the largest
    concurrency, PAGED_PREFILL by the prompt-chunk attention summed over its cases (a failed kernel never wins),
    and whether CUDA graphs pay (the best configuration replays them)."""
    best = figures["best_kernel"]
    decode = best.removesuffix("+graphs")

    def prefill_us(name: str) -> float:
        total = sum(row.get(name, math.nan) for row in figures["prefill_attention_us"].values())
        return math.inf if math.isnan(total) else total

    prefill = min(kernels, key=prefill_us) if figures["prefill_attention_us"] else "gather"
    name = lambda kernel: "unset (gather)" if kernel == "gather" else repr(kernel)  # noqa: E731
    return {"PAGED_DECODE['cuda']": name(decode), "PAGED_PREFILL['cuda']": name(prefill),
            "--cuda-graphs default": "TGI's sizes" if best.endswith("+graphs") else "off"}


def measure_config(runner: Any, num_blocks: int, spec: Any, args: argparse.Namespace, kernel: str, graphs: bool,
                   weight_bytes: int, bandwidth: float, row: dict[str, Any], save: Callable[[], None]) -> None:
    """decode_b1 and serve_N of one decode kernel, eager or with graphs, into `row`."""
    name = kernel + ("+graphs" if graphs else "")
    use_kernel(runner, kernel)
    use_graphs(runner, spec, args, graphs)
    d = row["decode_b1"] = decode_batch1(runner, num_blocks, args, weight_bytes, bandwidth)
    save()
    print(f"[{name}] decode_b1: {d['per_token_ms']:.2f} ms/token, floor {d['floor_ms']:.2f} ms: "
          f"{d['floor_over_ours']:.2f} of the floor (goal 0.85)", flush=True)
    for count in args.sizes:
        ours = row[f"serve_{count}"] = serve(runner, num_blocks, args, count)
        save()
        print(f"[{name}] serve_{count}: ours {ours['tokens_per_s']:.0f} tok/s, TTFT p50 {ours['ttft_p50_s']:.2f} s"
              f" p99 {ours['ttft_p99_s']:.2f} s", flush=True)
    runner.graphs = None


if __name__ == "__main__":
    main()
