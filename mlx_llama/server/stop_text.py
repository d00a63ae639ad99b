"""Stop strings on streamed text: hold back what could still become a stop string, cut where one completes."""

from __future__ import annotations

from collections.abc import Sequence


class StopText:
    """`feed(text)` -> (text safe to send now, whether a stop string completed); `flush()` the held tail."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buffer = self.held + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return buffer[: min(found)], True
        keep = 0
        for stop in self.stops:
            keep = max([keep] + [n for n in range(1, len(stop)) if buffer.endswith(stop[:n])])
        cut = len(buffer) - keep
        self.held = buffer[cut:]
        return buffer[:cut], False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out
