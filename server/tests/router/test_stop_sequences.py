"""Stop sequences are found in decoded text, also when they span several pieces."""
from __future__ import annotations

import pytest

from textgen_server.router.stop import StopSequenceMatcher


@pytest.mark.parametrize(
    ("stops", "pieces", "hit_at", "expected"),
    [
        (("\n\n",), ["a", "b\n", "\nc"], 2, "\n\n"),                 # spans two pieces
        (("END",), ["xx", "E", "N", "D"], 3, "END"),                 # one character per piece
        (("stop",), ["no", "thing", "here"], None, None),
        (("abc", "b"), ["xab", "c"], 0, "b"),                        # earliest match wins
        (("long stop", "op"), ["a long st", "op"], 1, "long stop"),  # starts before the shorter one
        ((), ["anything"], None, None),
    ],
)
def test_first_piece_that_completes_a_stop_sequence(stops: tuple[str, ...], pieces: list[str],
                                                    hit_at: int | None, expected: str | None) -> None:
    matcher = StopSequenceMatcher(stops)
    results = [matcher.push(piece) for piece in pieces]
    first = next((i for i, r in enumerate(results) if r is not None), None)
    assert first == hit_at
    assert (results[first] if first is not None else None) == expected


def test_empty_pieces_keep_the_tail() -> None:
    matcher = StopSequenceMatcher(("ab",))
    assert matcher.push("a") is None
    assert matcher.push("") is None
    assert matcher.push("b") == "ab"
