"""Streaming detokenizer for SentencePiece tokenizers: text for generated ids one at a time, equal to `decode`
of the whole sequence.

Why not re-decode: decoding the growing sequence at every step costs O(T) per token, and decoding token by
token loses spaces (the first token's prefix space is dropped). Instead each id is mapped once to the bytes
SentencePiece would write for it, and a few flags reproduce the leading-space rules:

* Transformers drops one leading "▁" of the first token (`add_prefix_space`);
* SentencePiece itself (when the model adds a dummy prefix, i.e. legacy=True) drops one more leading "▁" from
  the first piece that writes anything, so decoding `["▁", "▁leading"]` gives "leading";
* byte-fallback pieces (`<0x0A>`, the bytes of an emoji or CJK character) are held until the character is
  complete; a byte sequence that can no longer be valid UTF-8 becomes one U+FFFD per byte, as in
  SentencePiece.

The contract: after any `add_token`, the concatenation of everything returned equals
`tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)` minus a held-back incomplete
character at the end; after `finalize()` it is equal. Special tokens (bos, eos, unk, pad, additional special
tokens) write nothing. Streaming keeping special tokens is not offered: with legacy=True Transformers' decode
inserts a space *before* the text preceding a special token, so that output is not append-only.
"""

from __future__ import annotations

import codecs

from ..errors import TokenizerError

SPIECE_UNDERLINE = "\u2581"
REPLACEMENT = "\ufffd"

# what one piece writes (see `_piece_kind`)
_NORMAL, _BYTE, _CONTROL, _UNKNOWN, _LITERAL = range(5)


def _piece_kind(sp, piece: str, unk_surface: str) -> tuple[int, object]:
    """How SentencePiece's decoder writes `piece`: (kind, bytes to write or the byte value)."""
    index = sp.piece_to_id(piece)
    if sp.is_unknown(index) and piece != sp.id_to_piece(index):
        return _LITERAL, piece  # not in the vocabulary: SentencePiece writes the piece text as it is
    if sp.is_control(index):
        return _CONTROL, ""
    if sp.is_unknown(index):
        return _UNKNOWN, unk_surface
    if sp.is_byte(index):
        return _BYTE, int(piece[3:5], 16)
    return _NORMAL, piece


class StreamTable:
    """Per-tokenizer lookup built once: id -> what it writes, and which ids are skipped or standalone."""

    def __init__(self, tok) -> None:
        sp = tok.sp_model
        self.sp_strips_space, self.unk_surface = _decoder_facts(sp)
        self.sp = sp
        added = tok.added_tokens_decoder
        self.size = max([tok.vocab_size, *(i + 1 for i in added)])
        special_ids = set(tok.all_special_ids)
        special_tokens = set(tok.all_special_tokens)
        standalone = tok.standalone_added_tokens()
        # ids missing from a gappy added-token table are unknown: skipped by the range check below
        self.tokens = [
            added[i].content if i in added else tok.sp_model.id_to_piece(i) if i < tok.vocab_size else None
            for i in range(self.size)
        ]
        self.valid = [t is not None for t in self.tokens]
        self.tokens = [t if t is not None else "" for t in self.tokens]
        self.skip = [i in special_ids or t in special_tokens for i, t in enumerate(self.tokens)]
        self.standalone = [t in standalone for t in self.tokens]
        self.kinds = [
            _piece_kind(sp, t, self.unk_surface) if not (s or a) else (_CONTROL, "")
            for t, s, a in zip(self.tokens, self.skip, self.standalone, strict=True)
        ]


def _decoder_facts(sp) -> tuple[bool, str]:
    """(does SentencePiece strip the first piece's "▁" when decoding, the text it writes for <unk>).

    Found by asking the processor itself rather than reading the model proto (no protobuf needed): the strip
    happens when the loaded model adds a dummy prefix or removes extra whitespace.
    """
    strips = False
    for index in range(sp.get_piece_size()):
        piece = sp.id_to_piece(index)
        if piece.startswith(SPIECE_UNDERLINE) and not (
            sp.is_control(index) or sp.is_unknown(index) or sp.is_byte(index)
        ):
            strips = sp.decode_ids([index]) != piece.replace(SPIECE_UNDERLINE, " ")
            break
    unk = sp.unk_id()
    unk_surface = sp.decode_ids([unk]) if 0 <= unk < sp.get_piece_size() else ""
    return strips, unk_surface


class EmittedText:
    """The text a streaming detokenizer has emitted: all of it (`text`) and what is new since last read."""

    _segments: list[str]
    _unread: int

    @property
    def text(self) -> str:
        return "".join(self._segments)

    @property
    def last_segment(self) -> str:
        """Text emitted since this property was last read."""
        out = "".join(self._segments[self._unread :])
        self._unread = len(self._segments)
        return out


class StreamingDetokenizer(EmittedText):
    """Turn ids into text one at a time; `add_token(id)` returns the newly completed text (maybe "").

    Usage::

        detok = tok.detokenizer()          # or StreamingDetokenizer(tok)
        for id in generated_ids:
            print(detok.add_token(id), end="", flush=True)
        print(detok.finalize())

    `text` is everything emitted so far, `tokens` the ids fed, `last_segment` the text emitted since it was
    last read. `reset()` starts a new sequence. Work per token is O(1).
    """

    def __init__(self, tokenizer, table: StreamTable | None = None) -> None:
        self._tok = tokenizer
        self._table = table if table is not None else StreamTable(tokenizer)
        self.reset()

    def reset(self) -> None:
        """Forget the sequence; the next token is again the first one."""
        self.tokens: list[int] = []
        self._segments: list[str] = []
        self._unread = 0
        self._bytes = bytearray()  # byte-fallback bytes not yet written
        # decode() joins sub-texts (runs of ordinary tokens, standalone added tokens) with " "
        self._has_text = False  # a sub-text was written, so the next one needs a separator
        self._sep_written = False  # that separator is already out
        self._start_run()

    def _start_run(self) -> None:
        """A run is a stretch between standalone added tokens: decode handles each as a fresh sequence."""
        self._first = True  # Transformers' strip of the first token's "▁" is pending
        self._bos_space = self._table.sp_strips_space  # SentencePiece's own leading-space strip is armed
        self._run_open = False  # the run has had a token

    # ------------------------------------------------------------------ public API
    def add_token(self, token_id: int) -> str:
        """Feed one id; return the text it completes ("" while a multi-byte character is incomplete)."""
        token_id = int(token_id)
        table = self._table
        if not (0 <= token_id < table.size and table.valid[token_id]):
            raise TokenizerError(f"token id {token_id} is out of range for this tokenizer (ids 0..{table.size - 1})")
        self.tokens.append(token_id)
        if table.skip[token_id]:
            return ""
        if table.standalone[token_id]:  # an added non-special token: its own sub-text
            out = self._emit(self._drain(final=True))
            out += self._separator() + self._emit(table.tokens[token_id])
            self._start_run()
            return out
        # The separator can go out at once: whether this run writes text or not, decode puts a " " here
        # (before the run's text, before the next added token, or after a trailing empty run).
        out = ""
        if not self._run_open:
            self._run_open = True
            out = self._separator()
        kind, value = table.kinds[token_id]
        if self._first:
            self._first = False
            piece = table.tokens[token_id]
            if self._tok.add_prefix_space and piece.startswith(SPIECE_UNDERLINE):
                kind, value = _piece_kind(table.sp, piece[1:], table.unk_surface)
        if kind == _BYTE:
            self._bos_space = False
            self._bytes.append(value)
            return out + self._emit(self._drain(final=False))
        if kind == _CONTROL:
            return out
        text = value
        if kind == _NORMAL:
            if self._bos_space and text.startswith(SPIECE_UNDERLINE):
                text = text[1:]
                self._bos_space = False
            text = text.replace(SPIECE_UNDERLINE, " ")
        if text:
            self._bos_space = False
        return out + self._emit(self._drain(final=True) + text)

    def finalize(self) -> str:
        """Write what is still held (an incomplete character becomes U+FFFD per byte, as decode does)."""
        return self._emit(self._drain(final=True))

    # ------------------------------------------------------------------ internals
    def _emit(self, text: str) -> str:
        if text:
            self._segments.append(text)
            self._has_text = True
            self._sep_written = False
        return text

    def _separator(self) -> str:
        if not self._has_text or self._sep_written:
            return ""
        self._sep_written = True
        self._segments.append(" ")
        return " "

    def _drain(self, final: bool) -> str:
        """Decode the held bytes: complete characters out, a still-completable tail kept unless `final`."""
        buf = self._bytes
        out = []
        i = 0
        while i < len(buf):
            need = _utf8_length(buf[i])
            if need == 0:
                out.append(REPLACEMENT)
                i += 1
                continue
            chunk = bytes(buf[i : i + need])
            if len(chunk) < need:
                if not final and _completable(chunk):
                    break
                out.append(REPLACEMENT)
                i += 1
                continue
            try:
                out.append(chunk.decode("utf-8"))
                i += need
            except UnicodeDecodeError:
                out.append(REPLACEMENT)
                i += 1
        del buf[:i]
        return "".join(out)


def _utf8_length(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte announces; 0 for a byte that cannot start one."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _completable(prefix: bytes) -> bool:
    """True if more bytes could still turn `prefix` into a valid character."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(prefix, final=False)
    except UnicodeDecodeError:
        return False
    return True
