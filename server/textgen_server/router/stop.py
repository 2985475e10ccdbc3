"""Stop sequences, matched on decoded text (a stop string may span several tokens or start mid-token)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StopSequenceMatcher:
    """Feeds on the text pieces a request emits; reports the first stop sequence that appears.

    Only the last `max(len(stop)) - 1` characters need to be kept between calls: a match ending in the new piece
    can start at most that far back.
    """

    stop_sequences: tuple[str, ...]
    _tail: str = field(default="", repr=False)

    def push(self, text: str) -> str | None:
        """Returns the stop sequence that now appears in the generated text, or None."""
        if not self.stop_sequences or not text:
            return None
        window = self._tail + text
        found = _earliest_match(window, self.stop_sequences)
        keep = max(len(stop) for stop in self.stop_sequences) - 1
        self._tail = window[-keep:] if keep > 0 else ""
        return found


def _earliest_match(text: str, stops: tuple[str, ...]) -> str | None:
    positions = [(text.find(stop), stop) for stop in stops if stop and stop in text]
    return min(positions)[1] if positions else None
