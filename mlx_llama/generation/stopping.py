"""`stop_strings` for `model.generate`: a row stops when a stop string ends inside its newest token.

As Transformers' StopStringCriteria, the match is on the text of the whole row (prompt included), the
stop string may span several tokens, and the newest token may run past the stop string's end. Only a
window of recent tokens is decoded, wide enough to hold the longest stop string.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError


class StopStrings:
    """Checks rows of ids against stop strings with a tokenizer's `decode`."""

    def __init__(self, stop_strings: str | Sequence[str], tokenizer) -> None:
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        if tokenizer is None:
            raise ConfigError("stop_strings need the tokenizer: call generate(..., stop_strings=..., tokenizer=tok)")
        if not stops or not all(isinstance(s, str) and s for s in stops):
            raise ConfigError(f"stop_strings must be non-empty strings, got {stop_strings!r}")
        self.stops, self.tokenizer = stops, tokenizer
        self.window = max(map(len, stops)) + 2  # tokens: every token decodes to at least one character, but a few

    def hit(self, row: Sequence[int]) -> bool:
        """Whether a stop string ends within the text of the row's last token."""
        ids = [int(t) for t in row[-self.window :]]
        before, text = self.tokenizer.decode(ids[:-1]), self.tokenizer.decode(ids)
        boundary = len(before) if text.startswith(before) else 0
        return any(stop in text[max(0, boundary - len(stop) + 1) :] for stop in self.stops)
