"""OpenAI text never contains the stop sequence: cutting finished text, and holding back a streamed tail that
might still become a stop sequence."""
from __future__ import annotations

import random

import pytest

from textgen_server.router.openai_responses import StreamText, held_suffix_length, trim_at_stop


@pytest.mark.parametrize(("text", "stops", "expected"), [
    ("hello world", ("wor",), "hello "),
    ("hello world", ("zz",), "hello world"),
    ("a.b!c", ("!", "."), "a"),             # the earliest stop wins, whatever its place in the list
    ("stop at start", ("stop",), ""),
    ("no stops", (), "no stops"),
])
def test_trim_at_stop(text: str, stops: tuple[str, ...], expected: str) -> None:
    assert trim_at_stop(text, stops) == expected


@pytest.mark.parametrize(("text", "stops", "held"), [
    ("hello wo", ("world",), 2),
    ("hello w", ("world", "wo!"), 1),
    ("hello", ("world",), 0),
    ("abab", ("ababc",), 4),               # overlapping prefixes: the longest one is held
    ("x", ("x",), 0),                      # a complete stop is not "held": it would have ended the request
    ("", ("abc",), 0),
])
def test_held_suffix_length(text: str, stops: tuple[str, ...], held: int) -> None:
    assert held_suffix_length(text, stops) == held


def test_stream_holds_back_a_possible_stop_and_releases_it_when_it_is_not_one() -> None:
    stream = StreamText(("END",))
    assert stream.push("foo E") == "foo "
    assert stream.push("N") == ""
    assert stream.push("x") == "ENx"            # "ENx" cannot become "END": released
    assert stream.finish(" E", stopped=False) == " E"  # no stop ended it: everything goes out


def test_stream_cuts_a_stop_that_spans_pieces() -> None:
    stream = StreamText(("<stop>",))
    sent = stream.push("answer <st") + stream.push("op") + stream.finish("> trailing", stopped=True)
    assert sent == "answer "


@pytest.mark.parametrize("seed", range(20))
def test_streamed_pieces_add_up_to_the_trimmed_text(seed: int) -> None:
    rng = random.Random(seed)
    stops = ("ab", "bca", "cc")
    text = "".join(rng.choice("abcx") for _ in range(30))
    cut = min((text.find(stop) + len(stop) for stop in stops if stop in text), default=len(text))
    generated = text[:cut]  # the server stops generating once a stop sequence is complete
    stopped = cut < len(text) or any(generated.endswith(stop) for stop in stops)
    cuts = sorted(rng.sample(range(1, len(generated)), min(5, max(len(generated) - 1, 0)))) if generated else []
    pieces = [generated[i:j] for i, j in zip([0, *cuts], [*cuts, len(generated)])]
    stream = StreamText(stops)
    sent = "".join(stream.push(piece) for piece in pieces[:-1]) + stream.finish(pieces[-1] if pieces else "", stopped)
    assert sent == (trim_at_stop(generated, stops) if stopped else generated)
