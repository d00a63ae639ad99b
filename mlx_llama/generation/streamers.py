"""Streamers with Transformers' interface: `generate(..., streamer=s)` calls `s.put(ids)` with the prompt,
then with each new token, and `s.end()` once. Text is released at word boundaries (a space or a newline),
so a word is never printed in pieces that a later token would change.
"""

from __future__ import annotations

from queue import Queue
from typing import Any

import numpy as np


def _ids_of(value: Any) -> list[int]:
    arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if arr.ndim > 1:
        if arr.shape[0] > 1:
            raise ValueError("streamers support a batch of one prompt only")
        arr = arr[0]
    return [int(t) for t in arr.reshape(-1)]


class TextStreamer:
    """Prints the text as it is generated (`skip_prompt=True` leaves the prompt out)."""

    def __init__(self, tokenizer, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer, self.skip_prompt, self.decode_kwargs = tokenizer, skip_prompt, decode_kwargs
        self._ids: list[int] = []
        self._printed = 0
        self._prompt_pending = True

    def put(self, value: Any) -> None:
        ids = _ids_of(value)
        if self.skip_prompt and self._prompt_pending:
            self._prompt_pending = False
            return
        self._prompt_pending = False
        self._ids.extend(ids)
        text = self.tokenizer.decode(self._ids, **self.decode_kwargs)
        if text.endswith("\n"):
            ready, self._ids, self._printed = text[self._printed :], [], 0
        elif text and _is_cjk(text[-1]):
            ready = text[self._printed :]
            self._printed += len(ready)
        else:
            ready = text[self._printed : text.rfind(" ") + 1]
            self._printed += len(ready)
        self.on_finalized_text(ready)

    def end(self) -> None:
        """Release what is left and mark the end of the stream."""
        text = self.tokenizer.decode(self._ids, **self.decode_kwargs) if self._ids else ""
        ready = text[self._printed :]
        self._ids, self._printed, self._prompt_pending = [], 0, True
        self.on_finalized_text(ready, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        print(text, flush=True, end="" if not stream_end else None)


class TextIteratorStreamer(TextStreamer):
    """Makes the text iterable, e.g. from another thread: `for piece in streamer: ...` until generation ends."""

    def __init__(
        self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs: Any
    ) -> None:
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration
        return value


def _is_cjk(char: str) -> bool:
    """CJK ideographs have no spaces between words: they are released as soon as they appear."""
    cp = ord(char)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )
