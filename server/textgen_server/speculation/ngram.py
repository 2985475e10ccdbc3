"""N-gram prompt lookup: the candidates are the tokens that followed the latest earlier occurrence of the
longest suffix of the request's tokens (prompt and generated), as vLLM's prompt-lookup proposer.

TGI's n-gram matches only the last token (its first occurrence); matching the longest suffix of NGRAM_MAX_N down
to NGRAM_MIN_N tokens, latest occurrence first, proposes from the strongest clue there is. Down to a single
token, as transformers' prompt lookup does: with a minimum of 2 our proposer made 1.92 tokens per forward on the
benchmark's input-grounded prompts (batch 1, --speculate 2) to transformers' 2.18; with 1, 2.13 (and 2.78 to its
2.78 at 4). The wrong candidates a weak clue adds on open-ended text (+40% proposals there, batch 8) are what the
adaptive rule prices: a request whose candidates are rejected proposes fewer. Pure Python; the search is
bytes.rfind over the tokens packed as 4-byte integers, so a 4k-token context costs microseconds.
"""
from __future__ import annotations

from array import array
from collections.abc import Sequence

NGRAM_MAX_N = 4   # longest suffix tried first
NGRAM_MIN_N = 1   # a single repeated token too, as transformers (see above); the adaptive rule prices misses
_WIDTH = 4        # bytes per packed token id (array 'I')


def propose_ngram(tokens: Sequence[int], num_tokens: int, min_n: int = NGRAM_MIN_N,
                  max_n: int = NGRAM_MAX_N) -> list[int]:
    """Up to `num_tokens` tokens that followed the latest earlier occurrence of the longest matching suffix."""
    if num_tokens < 1 or len(tokens) <= min_n:
        return []
    data = array("I", tokens).tobytes()
    end = len(data) - _WIDTH  # an occurrence must end before the last token (it is not the suffix itself)
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        pattern = data[-n * _WIDTH:]
        position = data.rfind(pattern, 0, end)
        while position > 0 and position % _WIDTH:  # a match straddling token boundaries: search before it
            position = data.rfind(pattern, 0, position + len(pattern) - 1)
        if position >= 0 and position % _WIDTH == 0:
            start = position // _WIDTH + n
            return list(tokens[start : start + num_tokens])
    return []


class NgramProposer:
    """Proposes from each request's own tokens; the hidden states are not used."""

    method = "ngram"

    def __init__(self, num_tokens: int) -> None:
        self.num_tokens = num_tokens

    def propose(self, histories: Sequence[Sequence[int]], hidden: object = None) -> list[list[int]]:
        return [propose_ngram(history, self.num_tokens) for history in histories]
