"""The text each token id adds in the middle of a sequence, for constrained decoding and logprob entries.

SentencePiece vocabularies map "▁" to a space and "<0xNN>" to byte NN; only ASCII bytes get a text (a lone
high byte is not a character), and special tokens get None. Other vocabularies fall back to decoding each
id alone.
"""

from __future__ import annotations

import re
import weakref

SPIECE_UNDERLINE = "\u2581"
_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _piece_text(piece: str) -> str | None:
    byte = _BYTE.fullmatch(piece)
    if byte:
        value = int(byte.group(1), 16)
        return chr(value) if value < 0x80 else None
    return piece.replace(SPIECE_UNDERLINE, " ")


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> (size, texts), held here


def token_texts(tokenizer) -> list[str | None]:
    """One entry per id: its text, or None for special tokens and partial characters. Cached per tokenizer (in this
    module, not on the tokenizer: its private state is its own)."""
    cached = _CACHE.get(tokenizer)
    if cached is not None and cached[0] == len(tokenizer):
        return cached[1]
    size = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pieces = tokenizer.convert_ids_to_tokens(list(range(size))) if hasattr(tokenizer, "convert_ids_to_tokens") else None
    if pieces is not None and any(SPIECE_UNDERLINE in p for p in pieces if p):
        texts = [None if i in special or not p else _piece_text(p) for i, p in enumerate(pieces)]
    else:
        texts = []
        for i in range(size):
            text = None if i in special else tokenizer.decode([i])
            texts.append(None if text is None or "\ufffd" in text else text)
    try:
        _CACHE[tokenizer] = (size, texts)
    except TypeError:  # not weak-referenceable: recompute next time
        pass
    return texts


def token_bytes(text: str | None) -> list[int] | None:
    """The `bytes` field of an OpenAI logprob entry."""
    return None if text is None else list(text.encode("utf-8"))
