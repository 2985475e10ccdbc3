"""Watermark detector: how likely a text is to carry the green-list watermark of `watermark.py`.

    python -m textgen_server.sampling.watermark_detect --model DIR [--gamma 0.5] [--prompt TEXT] [TEXT]
    python -m textgen_server.sampling.watermark_detect --model DIR --token-ids '[12, 345, ...]' [--prompt TEXT]

(the text from standard input when neither is given; `--token-ids` scores the generated ids themselves, e.g.
`details.tokens[].id` of /generate, with no re-tokenization). It prints one JSON object: `num_scored` tokens, `num_green`,
`green_fraction`, `z_score`, `p_value`, and `watermarked` (z above `--threshold`, default 4 as in the paper).

A scored token is green when it is in the green list of the token before it. Without the watermark each token is
green with probability gamma, independently of the text, so among T scored tokens the count G of green ones has
mean gamma*T and variance T*gamma*(1 - gamma); the z-score is (G - gamma*T) / sqrt(T*gamma*(1 - gamma)) and the
p-value its one-sided normal tail (Kirchenbauer et al. 2023, section 3). Detection needs only the tokenizer, the
vocabulary size (config.json `vocab_size`, the width of the logits the server biased) and the server's
--watermark-gamma; delta is not needed (it sets how strongly text is watermarked, not how it is scored).

The text is tokenized again (no special tokens added). A model that writes whole characters usually gets its ids
back, but tokens that end inside a UTF-8 character decode to U+FFFD and other merges may re-tokenize differently,
which lowers z: a random-weight test model emits such byte fragments all the time, so score its token ids. The first token of a text has no
previous token in it: give `prompt` (the request's `inputs`) to score it against the prompt's last token, as the
server seeded it; without one it is skipped.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from textgen_server.sampling.watermark import green_mask

DEFAULT_GAMMA = 0.5      # TGI's WATERMARK_GAMMA default, the launcher's --watermark-gamma default
DEFAULT_THRESHOLD = 4.0  # the paper's z threshold: a false positive rate of about 3e-5


@dataclass(frozen=True)
class WatermarkScore:
    num_scored: int
    num_green: int
    green_fraction: float
    z_score: float
    p_value: float


def score_token_ids(token_ids: Sequence[int], vocab_size: int, gamma: float = DEFAULT_GAMMA,
                    previous_token_id: int | None = None) -> WatermarkScore:
    """Scores `token_ids` (generated tokens in order); `previous_token_id` is the token before the first one."""
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be strictly between 0 and 1, got {gamma}")
    ids = [previous_token_id, *token_ids] if previous_token_id is not None else list(token_ids)
    outside = [i for i in ids if not 0 <= i < vocab_size]
    if outside:
        raise ValueError(f"token ids {outside[:5]} are outside the vocabulary [0, {vocab_size}): wrong model?")
    pairs = list(zip(ids, ids[1:]))
    num_green = sum(bool(green_mask(previous, vocab_size, gamma)[token]) for previous, token in pairs)
    return build_score(num_green, len(pairs), gamma)


def build_score(num_green: int, num_scored: int, gamma: float) -> WatermarkScore:
    """The z-score and one-sided p-value of `num_green` green tokens among `num_scored`."""
    if num_scored == 0:
        return WatermarkScore(0, 0, 0.0, 0.0, 1.0)
    z_score = (num_green - gamma * num_scored) / math.sqrt(num_scored * gamma * (1.0 - gamma))
    return WatermarkScore(num_scored=num_scored, num_green=num_green, green_fraction=num_green / num_scored,
                          z_score=z_score, p_value=0.5 * math.erfc(z_score / math.sqrt(2.0)))


def score_text(text: str, tokenizer: Any, vocab_size: int, gamma: float = DEFAULT_GAMMA,
               prompt: str | None = None) -> WatermarkScore:
    """Scores a generated `text`; with `prompt`, its first token too (against the prompt's last token)."""
    token_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    previous = list(tokenizer(prompt)["input_ids"])[-1] if prompt else None
    return score_token_ids(token_ids, vocab_size, gamma, previous)


def load_vocab_size(model_dir: Path) -> int:
    """config.json's vocab_size: the logits' width, over which the server drew its green lists."""
    config = json.loads((model_dir / "config.json").read_text())
    vocab_size = config.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(f"{model_dir / 'config.json'} has no positive integer `vocab_size`; pass --vocab-size")
    return vocab_size


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m textgen_server.sampling.watermark_detect",
                                     description="z-score of a text under the server's green-list watermark")
    parser.add_argument("--model", required=True, type=Path,
                        help="the served model's directory (its tokenizer and config.json)")
    parser.add_argument("--gamma", type=float, default=DEFAULT_GAMMA,
                        help="the server's --watermark-gamma [default: %(default)s]")
    parser.add_argument("--vocab-size", type=int, default=None, help="default: config.json's vocab_size")
    parser.add_argument("--prompt", default=None, help="the request's inputs, to score the first token too")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="z above which the text is called watermarked [default: %(default)s]")
    parser.add_argument("--token-ids", type=json.loads, default=None,
                        help="a JSON list of generated token ids to score instead of a text")
    parser.add_argument("text", nargs="?", default=None, help="the text to score (default: standard input)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    from transformers import AutoTokenizer  # here: --help should not wait for transformers

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    vocab_size = args.vocab_size or load_vocab_size(args.model)
    if args.token_ids is not None:
        previous = list(tokenizer(args.prompt)["input_ids"])[-1] if args.prompt else None
        score = score_token_ids([int(i) for i in args.token_ids], vocab_size, args.gamma, previous)
    else:
        text = args.text if args.text is not None else sys.stdin.read()
        score = score_text(text, tokenizer, vocab_size, args.gamma, args.prompt)
    print(json.dumps({**asdict(score), "watermarked": score.z_score > args.threshold}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
