#!/usr/bin/env python
"""Speculative decoding on this machine, in one run: speculation off vs n-gram --speculate 2 and 4 vs Medusa,
at batch 1 (requests one after another) and batch 8 (concurrent streams), on an input-grounded and an open-ended
workload; and transformers' prompt-lookup decoding (`prompt_lookup_num_tokens`) on the same grounded prompts.

Model: the server benchmark's Llama shape (textgen_server/testing/bench_model.py, ~51M parameters, float32) made
repetitive (textgen_server/testing/repetitive_model.py, attention_scale 0: attention is computed but its output
projection is zero, so the next token is a function of the current one): random weights never copy from their
input, which is what speculation feeds on in real models; this variant does. At this size a weaker scaling
(0.02, the tests') still lets attention change the continuation, and nothing repeats. Acceptance is therefore
higher than a real model's on the grounded workload: read the speedups with the acceptance rates beside them. Input-grounded prompts: a passage of the tokenizer's
corpus, the model's own 96-token greedy continuation, then the passage again (the answer copies the prompt, as in
code edits or extraction). Open-ended prompts: 128 random tokens. Each request generates O tokens (64, EOS ignored).
Medusa: 3 heads fitted offline to the model's continuations of 4 of the grounded prompts (testing/medusa_repo.py).
Interleaved: every server is started first (one after another, so each one's warmup timings are not disturbed by
another's warmup), then each round measures every (workload, batch) on every server in a rotated order, and
transformers' runs, so a burst of load from other processes on a shared machine hits every system alike.
Reported: output tokens/s, TPOT (mean over requests), acceptance rate (tgi_speculative_accepted_tokens /
tgi_speculative_proposed_tokens from /metrics), the load average; each figure the median over rounds, each ratio
to speculation off the median of the same-round ratios.

Usage: .venv/bin/python hack/bench-speculation.py [--output-tokens 64] [--batch1-requests 4] [--rounds 3]
       [--no-medusa] [--configs off,ngram-2,ngram-4,medusa-3] [--workloads input-grounded,open-ended]
       [--hidden-size 768 --layers 8 --intermediate-size 2048 --heads 12 --kv-heads 4] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from textgen_server.testing.bench_launcher import running_launcher
from textgen_server.testing.bench_model import add_model_arguments
from textgen_server.testing.medusa_repo import build_medusa_repo
from textgen_server.testing.repetitive_model import build_repetitive_model
from textgen_server.testing.stream_timing import stream_all

BATCH = 8
CONFIGS = ("off", "ngram-2", "ngram-4", "medusa-3")
WORKLOADS = ("input-grounded", "open-ended")


@dataclass
class Row:
    config: str
    workload: str
    batch: int
    round: int
    tokens_per_s: float
    tpot_ms: float
    acceptance: float | None
    load: float  # 1-minute load average at the end of the measurement


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--batch1-requests", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every system")
    parser.add_argument("--no-medusa", action="store_true")
    parser.add_argument("--configs", default="off,ngram-2,ngram-4,medusa-3",
                        help="servers to compare (off is always included: the ratios' baseline)")
    parser.add_argument("--workloads", default="input-grounded,open-ended")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textgen-bench-speculation")
    parser.add_argument("--json", type=Path, default=None)
    add_model_arguments(parser)
    args = parser.parse_args()
    for flag, value, known in (("--configs", args.configs, CONFIGS), ("--workloads", args.workloads, WORKLOADS)):
        unknown = set(value.split(",")) - set(known)
        if unknown:
            parser.error(f"{flag}: unknown {sorted(unknown)}; choose from {','.join(known)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def build_model(args: argparse.Namespace) -> Path:
    name = f"bigram-llama-h{args.hidden_size}-l{args.layers}-i{args.intermediate_size}-a{args.heads}-kv{args.kv_heads}"
    path = args.workdir / name
    if not (path / "model.safetensors").exists():
        build_repetitive_model(path, "llama", dtype="float32", attention_scale=0.0, hidden_size=args.hidden_size,
                               num_hidden_layers=args.layers, intermediate_size=args.intermediate_size,
                               num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                               max_position_embeddings=2048)
    return path


def build_prompts(model_dir: Path) -> tuple[list[str], list[str], list[list[int]]]:
    """(input-grounded texts, open-ended texts, grounded token ids), BATCH of each.

    Grounded: a corpus passage P, the model's own 96-token greedy continuation G, then P again: the answer copies
    G from the prompt. Built as text (the server's API takes text) from text, so P tokenizes the same both times."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textgen_server.testing.corpus import build_corpus

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    lines = build_corpus(num_repeats=1)
    grounded, grounded_ids = [], []
    for index in range(BATCH):
        passage = " ".join(lines[(index * 3 + k) % len(lines)] for k in range(3))
        ids = tokenizer(passage, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, do_sample=False, max_new_tokens=96, min_new_tokens=96)
        text = passage + tokenizer.decode(out[0, ids.shape[1]:]) + passage
        grounded.append(text)
        grounded_ids.append(tokenizer(text)["input_ids"])
    generator = torch.Generator().manual_seed(0)
    open_ended = [tokenizer.decode(torch.randint(10, model.config.vocab_size, (128,), generator=generator).tolist())
                  for _ in range(BATCH)]
    return grounded, open_ended, grounded_ids


def speculative_counts(base_url: str) -> tuple[float, float]:
    text = httpx.get(f"{base_url}/metrics").text
    values = [float(m.group(1)) if (m := re.search(rf"^{name} (\S+)$", text, re.M)) else 0.0
              for name in ("tgi_speculative_proposed_tokens", "tgi_speculative_accepted_tokens")]
    return values[0], values[1]


def measure(base_url: str, texts: list[str], batch: int, output_tokens: int) -> tuple[float, float, float | None]:
    before = speculative_counts(base_url)
    started = time.perf_counter()
    if batch == 1:
        timings = [asyncio.run(stream_all(base_url, [text], output_tokens))[0] for text in texts]
    else:
        timings = asyncio.run(stream_all(base_url, texts, output_tokens))
    wall = time.perf_counter() - started
    after = speculative_counts(base_url)
    proposed, accepted = after[0] - before[0], after[1] - before[1]
    tpot = sum((t[-1] - t[1]) / (len(t) - 2) for t in timings) / len(timings)
    return sum(len(t) - 1 for t in timings) / wall, tpot * 1000, (accepted / proposed if proposed else None)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_round(round_index: int, servers: dict[str, str], workloads: dict[str, list[str]],
              args: argparse.Namespace) -> list[Row]:
    """One measurement of every (workload, batch) on every server, the servers' order rotated by round."""
    rows = []
    labels = list(servers)
    order = labels[round_index % len(labels):] + labels[: round_index % len(labels)]
    for workload, texts in workloads.items():
        for batch, chosen in ((1, texts[: args.batch1_requests]), (BATCH, texts)):
            for label in order:
                speed, tpot, acceptance = measure(servers[label], chosen, batch, args.output_tokens)
                rows.append(Row(label, workload, batch, round_index, speed, tpot, acceptance, load_average()))
                print(f"round {round_index} {label:10s} {workload:14s} batch {batch}: {speed:7.1f} tok/s  TPOT "
                      f"{tpot:6.1f} ms  acceptance {'-' if acceptance is None else f'{acceptance:.2f}'}  load "
                      f"{rows[-1].load:.1f}", flush=True)
    return rows


def load_transformers(model_dir: Path, prompt: list[int]) -> object:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():  # first-call costs out of the figures, as for the server
        model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=4, prompt_lookup_num_tokens=2)
    return model


def transformers_prompt_lookup(model: object, prompts: list[list[int]], output_tokens: int) -> dict[str, float]:
    """tokens/s of transformers' generate at batch 1, plain and with prompt_lookup_num_tokens 2 and 4."""
    import torch

    results = {}
    for label, extra in (("plain", {}), ("prompt-lookup-2", {"prompt_lookup_num_tokens": 2}),
                         ("prompt-lookup-4", {"prompt_lookup_num_tokens": 4})):
        started = time.perf_counter()
        for prompt in prompts:
            with torch.no_grad():
                model.generate(torch.tensor([prompt]), do_sample=False,  # type: ignore[attr-defined]
                               max_new_tokens=output_tokens, min_new_tokens=output_tokens, **extra)
        results[label] = len(prompts) * output_tokens / (time.perf_counter() - started)
        print(f"transformers {label}: {results[label]:.1f} tok/s  load {load_average():.1f}", flush=True)
    return results


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args)
    grounded, open_ended, grounded_ids = build_prompts(model_dir)
    workloads = {name: texts for name, texts in (("input-grounded", grounded), ("open-ended", open_ended))
                 if name in args.workloads.split(",")}
    wanted = {"off", *args.configs.split(",")} - ({"medusa-3"} if args.no_medusa else set())
    configs: list[tuple[str, Path, list[str]]] = [("off", model_dir, []), ("ngram-2", model_dir, ["--speculate", "2"]),
                                                  ("ngram-4", model_dir, ["--speculate", "4"])]
    if "medusa-3" in wanted:
        medusa_dir = build_medusa_repo(args.workdir / "medusa", model_dir, grounded_ids[:4], args.output_tokens,
                                       num_heads=3)
        configs.append(("medusa-3", medusa_dir, []))
    hf_model = load_transformers(model_dir, grounded_ids[0]) if "input-grounded" in workloads else None
    rows: list[Row] = []
    hf_rounds: list[dict[str, float]] = []
    with ExitStack() as stack:
        servers = {}
        for label, model_id, extra in configs:  # one after another: no warmup is timed beside another's
            if label in wanted:
                servers[label] = stack.enter_context(running_launcher(model_id, extra, args.workdir, name=label))
                asyncio.run(stream_all(servers[label], open_ended[:2], 4))  # first-request costs out of the figures
        for round_index in range(args.rounds):
            rows += run_round(round_index, servers, workloads, args)
            if hf_model is not None:
                hf_rounds.append(transformers_prompt_lookup(hf_model, grounded_ids[: args.batch1_requests],
                                                            args.output_tokens))
    print_report(rows, hf_rounds)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "transformers": hf_rounds}, indent=2))


def print_report(rows: list[Row], hf_rounds: list[dict[str, float]]) -> None:
    """Medians over rounds; each ratio is the median of the ratios to speculation off within the same round."""
    base = {(r.workload, r.batch, r.round): r.tokens_per_s for r in rows if r.config == "off"}
    print("\n| config | workload | batch | tokens/s | vs off | TPOT ms | acceptance | load |\n"
          "|---|---|--:|--:|--:|--:|--:|--:|")
    keys = list(dict.fromkeys((r.config, r.workload, r.batch) for r in rows))
    for config, workload, batch in keys:
        mine = [r for r in rows if (r.config, r.workload, r.batch) == (config, workload, batch)]
        ratio = statistics.median(r.tokens_per_s / base[(workload, batch, r.round)] for r in mine)
        accepted = [r.acceptance for r in mine if r.acceptance is not None]
        acceptance = f"{statistics.median(accepted):.2f}" if accepted else "-"
        print(f"| {config} | {workload} | {batch} | {statistics.median(r.tokens_per_s for r in mine):.1f} | "
              f"{ratio:.2f}x | {statistics.median(r.tpot_ms for r in mine):.1f} | {acceptance} | "
              f"{min(r.load for r in mine):.1f}-{max(r.load for r in mine):.1f} |")
    if hf_rounds:
        for label in ("prompt-lookup-2", "prompt-lookup-4"):
            ratio = statistics.median(hf[label] / hf["plain"] for hf in hf_rounds)
            print(f"transformers {label} speedup at batch 1 (input-grounded): {ratio:.2f}x ("
                  f"{statistics.median(hf['plain'] for hf in hf_rounds):.1f} -> "
                  f"{statistics.median(hf[label] for hf in hf_rounds):.1f} tok/s)")


if __name__ == "__main__":
    main()
