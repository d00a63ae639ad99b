"""Streaming detokenizers for fast (tokenizer.json) tokenizers: text for ids one at a time, O(1) per token.

After `finalize()` the concatenated output equals `tok.decode(ids, skip_special_tokens=True,
clean_up_tokenization_spaces=False)`; before it, a held-back incomplete character is all that is missing.
Each id is mapped once (per tokenizer) to what the file's decoder makes of it:

* byte-level BPE (Llama 3, `"decoder": {"type": "ByteLevel"}`): each token is bytes (its characters through
  GPT-2's byte<->unicode table; an added token with other characters is its UTF-8 text); the byte stream
  goes through an incremental UTF-8 decoder, so a character split across tokens is written whole, and
  invalid bytes become U+FFFD exactly as the library's lossy decoding does;
* SentencePiece-style files (Llama 2 fast: Replace "▁"->" ", ByteFallback, Fuse, Strip): "<0xNN>" tokens are
  held as a byte run until the next ordinary token (a run that is not valid UTF-8 is one U+FFFD per byte, as
  ByteFallback does), and the first `Strip` spaces of the text are dropped.

* Metaspace decoders: "▁" is a space, and the first token written loses its "▁"s (the library's rule).

Any other decoder falls back to re-decoding the sequence each step (correct, but O(length) per token).
"""

from __future__ import annotations

import codecs
import json

from ..errors import TokenizerError
from .spm_stream import EmittedText

SPIECE_UNDERLINE = "\u2581"
REPLACEMENT = "\ufffd"


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's table: printable Latin-1 bytes stand for themselves, the other bytes for chr(256 + n)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _decoder_kind(state: dict | None) -> tuple[str | None, int, bool]:
    """(kind, leading spaces stripped, byte fallback) for a decoder's JSON state."""
    if state is None:
        return None, 0, False
    if state.get("type") == "ByteLevel":
        return "byte_level", 0, False
    if state.get("type") == "Metaspace" and state.get("replacement") == SPIECE_UNDERLINE:
        scheme = state.get("prepend_scheme", "always" if state.get("add_prefix_space", True) else "never")
        return "metaspace", int(scheme != "never"), False
    steps = state.get("decoders") if state.get("type") == "Sequence" else None
    if not steps:
        return None, 0, False
    names = [s.get("type") for s in steps]
    first = steps[0]
    replace = ("Replace", {"String": SPIECE_UNDERLINE}, " ")
    if (first.get("type"), first.get("pattern"), first.get("content")) != replace:
        return None, 0, False
    strip = 0
    if names[-1] == "Strip":
        last = steps[-1]
        if last.get("content") != " " or last.get("stop", 0) != 0:
            return None, 0, False
        strip, names = int(last.get("start", 0)), names[:-1]
    if names not in (["Replace", "ByteFallback", "Fuse"], ["Replace", "Fuse"]):
        return None, 0, False
    return "spm", strip, "ByteFallback" in names


def _byte_level_value(token: str, alphabet: dict[str, int]) -> bytes:
    try:
        return bytes(alphabet[c] for c in token)
    except KeyError:
        return token.encode("utf-8")


def _spm_value(token: str, byte_fallback: bool) -> str | int:
    if byte_fallback and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return int(token[3:5], 16)
        except ValueError:
            pass
    return token.replace(SPIECE_UNDERLINE, " ")


class StreamTable:
    """Per-tokenizer lookup, built once: what each id writes and which ids are skipped (special)."""

    def __init__(self, tok) -> None:
        backend = tok.backend_tokenizer
        decoder = backend.decoder
        state = json.loads(decoder.__getstate__()) if decoder is not None else None
        self.kind, self.strip, byte_fallback = _decoder_kind(state)
        self.size = len(tok)
        tokens: list[str | None] = [None] * self.size
        for token, index in backend.get_vocab(with_added_tokens=True).items():
            if 0 <= index < self.size:
                tokens[index] = token
        self.valid = [t is not None for t in tokens]
        self.skip = [False] * self.size
        for index, added in backend.get_added_tokens_decoder().items():
            if added.special and index < self.size:
                self.skip[index] = True
        if self.kind == "byte_level":
            alphabet = byte_level_alphabet()
            self.values = [_byte_level_value(t, alphabet) if t is not None else b"" for t in tokens]
        elif self.kind == "spm":
            self.values = [_spm_value(t, byte_fallback) if t is not None else "" for t in tokens]
        elif self.kind == "metaspace":
            self.values = [t if t is not None else "" for t in tokens]
        else:
            self.values = []


class _Stream(EmittedText):
    """What every streaming detokenizer offers: add_token, finalize, text, tokens, last_segment, reset."""

    def __init__(self, tokenizer, table: StreamTable) -> None:
        self._tok = tokenizer
        self._table = table
        self.reset()

    def reset(self) -> None:
        """Forget the sequence; the next token is again the first one."""
        self.tokens: list[int] = []
        self._segments: list[str] = []
        self._unread = 0

    def _check(self, token_id: int) -> int:
        token_id = int(token_id)
        table = self._table
        if not (0 <= token_id < table.size and table.valid[token_id]):
            raise TokenizerError(f"token id {token_id} is out of range for this tokenizer (ids 0..{table.size - 1})")
        self.tokens.append(token_id)
        return token_id

    def _emit(self, text: str) -> str:
        if text:
            self._segments.append(text)
        return text


class ByteLevelDetokenizer(_Stream):
    """Byte-level BPE: bytes per token through an incremental UTF-8 decoder."""

    def reset(self) -> None:
        super().reset()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add_token(self, token_id: int) -> str:
        """Feed one id; return the text it completes ("" while a multi-byte character is incomplete)."""
        token_id = self._check(token_id)
        if self._table.skip[token_id]:
            return ""
        return self._emit(self._utf8.decode(self._table.values[token_id]))

    def finalize(self) -> str:
        """Write what is still held (incomplete bytes become U+FFFD, as decode does)."""
        return self._emit(self._utf8.decode(b"", final=True))


class SentencePieceStyleDetokenizer(_Stream):
    """Replace/ByteFallback/Fuse/Strip decoders: byte runs held until complete, leading spaces stripped."""

    def reset(self) -> None:
        super().reset()
        self._run = bytearray()
        self._strip = self._table.strip

    def _flush_run(self) -> str:
        if not self._run:
            return ""
        try:
            text = self._run.decode("utf-8")
        except UnicodeDecodeError:
            text = REPLACEMENT * len(self._run)
        self._run = bytearray()
        return text

    def _stripped(self, text: str) -> str:
        if self._strip and text:
            k = 0
            while k < len(text) and k < self._strip and text[k] == " ":
                k += 1
            text = text[k:]
            self._strip = 0 if text else self._strip - k
        return text

    def add_token(self, token_id: int) -> str:
        """Feed one id; return the text it completes ("" while byte tokens are pending)."""
        token_id = self._check(token_id)
        if self._table.skip[token_id]:
            return ""  # skipped before the decoder runs: a byte run continues across it
        value = self._table.values[token_id]
        if isinstance(value, int):
            self._run.append(value)
            return ""
        return self._emit(self._stripped(self._flush_run() + value))

    def finalize(self) -> str:
        return self._emit(self._stripped(self._flush_run()))


class MetaspaceDetokenizer(_Stream):
    """A Metaspace decoder: "▁" is a space, except in the first token written, where the library drops every
    "▁" (unless the prepend scheme is "never")."""

    def reset(self) -> None:
        super().reset()
        self._first = True

    def add_token(self, token_id: int) -> str:
        token_id = self._check(token_id)
        if self._table.skip[token_id]:
            return ""
        token = self._table.values[token_id]
        first, self._first = self._first, False
        return self._emit(token.replace(SPIECE_UNDERLINE, "" if first and self._table.strip else " "))

    def finalize(self) -> str:
        return ""


class RedecodeDetokenizer(_Stream):
    """Any other decoder: decode the whole sequence each step and write what is new (O(length) per token)."""

    def reset(self) -> None:
        super().reset()
        self._written = ""

    def _new_text(self, final: bool) -> str:
        text = self._tok.decode(self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if not final and text.endswith(REPLACEMENT):
            return ""
        new = text[len(self._written) :] if text.startswith(self._written) else ""
        self._written = text
        return self._emit(new)

    def add_token(self, token_id: int) -> str:
        self._check(token_id)
        return self._new_text(final=False)

    def finalize(self) -> str:
        return self._new_text(final=True)


def make_detokenizer(tok, table: StreamTable):
    """The streaming detokenizer that fits the tokenizer's decoder."""
    if table.kind == "byte_level":
        return ByteLevelDetokenizer(tok, table)
    if table.kind == "spm":
        return SentencePieceStyleDetokenizer(tok, table)
    if table.kind == "metaspace":
        return MetaspaceDetokenizer(tok, table)
    return RedecodeDetokenizer(tok, table)
