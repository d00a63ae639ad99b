"""Added tokens and the BatchEncoding dict, shared by the SentencePiece and the fast tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import TokenizerError

# Order in which Transformers registers the special-token attributes (decides ids of brand-new tokens).
SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "pad_token")

# How far past the vocabulary an added-token id may lie: real checkpoints number their added tokens densely
# after the vocabulary; an id millions beyond it is a corrupt file and would make id tables that large.
ADDED_ID_SLACK = 4096


@dataclass(frozen=True)
class AddedToken:
    """A token matched verbatim in the text before the model runs (Transformers' AddedToken flags)."""

    content: str
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False

    def __str__(self) -> str:
        return self.content


class BatchEncoding(dict):
    """The dict `__call__` returns (`input_ids`, `attention_mask`, ...), also readable as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


_FLAGS = ("lstrip", "rstrip", "single_word", "normalized", "special")


def as_added_token(value: Any, special: bool) -> AddedToken | None:
    """Accept a str, an AddedToken or the dict form Transformers writes in its JSON files."""
    if value is None or isinstance(value, AddedToken):
        return value
    if isinstance(value, str):
        return AddedToken(value, special=special, normalized=not special)
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        fields = {k: value[k] for k in _FLAGS if k in value}
        bad = [k for k, v in fields.items() if not isinstance(v, bool)]
        if bad:
            raise TokenizerError(f"token {value['content']!r}: field {bad[0]!r} must be true or false, got {value!r}")
        fields.setdefault("special", special)
        return AddedToken(value["content"], **fields)
    if hasattr(value, "content") and isinstance(value.content, str):  # a tokenizers/transformers AddedToken
        return AddedToken(
            value.content,
            special=getattr(value, "special", special),
            lstrip=value.lstrip,
            rstrip=value.rstrip,
            single_word=value.single_word,
            normalized=value.normalized,
        )
    raise TokenizerError(f"cannot read a token from {value!r}: expected a string or {{'content': ...}}")


def check_added_ids(ids: list[int], vocab_size: int, where: str) -> None:
    """Refuse added-token ids that are negative or absurdly far beyond the vocabulary."""
    limit = vocab_size + len(ids) + ADDED_ID_SLACK
    for index in ids:
        if index < 0 or index >= limit:
            raise TokenizerError(
                f"{where}: added token id {index} is out of range: the vocabulary has {vocab_size} tokens and "
                f"{len(ids)} added tokens, so ids must lie in 0..{limit - 1}"
            )
