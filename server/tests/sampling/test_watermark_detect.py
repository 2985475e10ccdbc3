"""The watermark detector (sampling/watermark_detect.py): its statistics, its CLI, and the acceptance check on a
random-weight model sampling at temperature 1: z > 4 on 200 watermarked tokens, not on unwatermarked ones."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from textgen_server.protocol import SamplingParams, WarmupSpec, WatermarkParams
from textgen_server.sampling.watermark import green_mask
from textgen_server.sampling.watermark_detect import build_score, score_text, score_token_ids
from textgen_server.shard.runner import ModelRunner
from textgen_server.testing.runner_driver import Driver, DriverRequest

NUM_TOKENS = 200
PROMPT = "The quick brown fox"


def test_z_score_and_p_value_of_known_counts() -> None:
    score = build_score(num_green=150, num_scored=200, gamma=0.5)
    assert score.z_score == pytest.approx(50 / math.sqrt(50)) and score.green_fraction == 0.75
    assert score.p_value == pytest.approx(0.5 * math.erfc(score.z_score / math.sqrt(2)))
    assert build_score(50, 200, 0.25).z_score == pytest.approx(0.0)
    assert build_score(0, 0, 0.5).z_score == 0.0


def test_green_chains_score_high_and_red_chains_low() -> None:
    vocab, token = 500, 7
    green, red = [], []
    for _ in range(64):  # each next token taken from the green (or red) list of the one before it
        green.append(int(green_mask(green[-1] if green else token, vocab, 0.5).nonzero()[0]))
        red.append(int((~green_mask(red[-1] if red else token, vocab, 0.5)).nonzero()[0]))
    assert score_token_ids(green, vocab, 0.5, token).num_green == 64
    assert score_token_ids(red, vocab, 0.5, token).num_green == 0
    assert score_token_ids(green, vocab, 0.5).num_scored == 63  # without the prompt the first token is skipped


def test_out_of_vocabulary_ids_and_bad_gamma_are_refused() -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        score_token_ids([1, 900], 500)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        score_token_ids([1, 2], 500, gamma=1.0)


@pytest.fixture(scope="module")
def generations(tiny_llama_dir: Path) -> dict[str, list[list[int]]]:
    """200 tokens at temperature 1 for 4 seeds, with and without the watermark, in one batch (EOS ignored by
    generating a fixed count: the driver does not stop at EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    runner = ModelRunner(tiny_llama_dir)
    warm = runner.warmup(WarmupSpec(max_input_tokens=64, max_total_tokens=256, max_prefill_tokens=256,
                                    kv_cache_memory_bytes=64 << 20))
    driver = Driver(runner, warm.num_blocks)
    prompt = list(tokenizer(PROMPT)["input_ids"])
    for index in range(8):
        watermark = WatermarkParams() if index % 2 == 0 else None
        params = SamplingParams(do_sample=True, seed=1000 + index, watermark=watermark)
        driver.admit(DriverRequest(index, prompt, NUM_TOKENS, params))
    out = driver.run()
    return {"marked": [out[i] for i in range(0, 8, 2)], "plain": [out[i] for i in range(1, 8, 2)],
            "prompt": [prompt]}


def test_watermarked_generations_score_above_4_and_plain_ones_do_not(generations: dict[str, list[list[int]]],
                                                                     tiny_llama_dir: Path) -> None:
    vocab = json.loads((tiny_llama_dir / "config.json").read_text())["vocab_size"]
    previous = generations["prompt"][0][-1]
    marked = [score_token_ids(ids, vocab, 0.5, previous) for ids in generations["marked"]]
    plain = [score_token_ids(ids, vocab, 0.5, previous) for ids in generations["plain"]]
    assert all(score.num_scored == NUM_TOKENS for score in marked + plain)
    assert all(score.z_score > 4 for score in marked), [round(s.z_score, 2) for s in marked]
    assert all(score.z_score < 4 for score in plain), [round(s.z_score, 2) for s in plain]


def test_the_cli_scores_token_ids_and_texts(generations: dict[str, list[list[int]]], tiny_llama_dir: Path) -> None:
    def cli(*args: str) -> dict[str, object]:
        done = subprocess.run([sys.executable, "-m", "textgen_server.sampling.watermark_detect", "--model",
                               str(tiny_llama_dir), *args], capture_output=True, text=True, timeout=120, check=True)
        return json.loads(done.stdout)

    marked = cli("--prompt", PROMPT, "--token-ids", json.dumps(generations["marked"][0]))
    plain = cli("--prompt", PROMPT, "--token-ids", json.dumps(generations["plain"][0]))
    assert marked["watermarked"] is True and marked["num_scored"] == NUM_TOKENS and marked["p_value"] < 1e-4
    assert plain["watermarked"] is False
    # A text is tokenized again: the CLI's answer is the function's on the same text.
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = "A watermark is a pattern hidden in text that an algorithm can find."
    expected = score_text(text, tokenizer, 768, 0.5, PROMPT)
    assert cli("--prompt", PROMPT, text)["num_green"] == expected.num_green
    assert expected.num_scored == len(tokenizer(text, add_special_tokens=False)["input_ids"])
