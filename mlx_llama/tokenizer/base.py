"""What the SentencePiece and the fast tokenizer share: special-token attributes, `__call__` with batching,
padding and tensors, `batch_decode`, the clean-up rules and chat templates.

A subclass supplies `_encode_rows` (texts -> rows of input_ids/token_type_ids/attention_mask, truncated, with
special tokens), `convert_tokens_to_ids`, `decode`, `_register` (ids for new added tokens) and `detokenizer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import TokenizerError
from .added import SPECIAL_ATTRS, AddedToken, BatchEncoding, as_added_token
from .chat import apply_chat_template, has_chat_template

# `clean_up_tokenization_spaces`: the fixed English replacements Transformers applies, in its order.
CLEANUP_RULES = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def check_side(name: str, side: Any) -> None:
    if side not in ("left", "right"):
        raise TokenizerError(f"{name} must be 'left' or 'right' (tokenizer_config.json), got {side!r}")


def id_list(token_ids: Any) -> list[int]:
    """One sequence of ids from an int, a list or a numpy/mlx array."""
    if isinstance(token_ids, (int, np.integer)):
        return [int(token_ids)]
    if hasattr(token_ids, "tolist"):  # numpy / mlx arrays
        token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            return [token_ids]
    if token_ids is None or isinstance(token_ids, (str, bytes)) or not hasattr(token_ids, "__iter__"):
        raise TokenizerError(f"decode takes a sequence of integer token ids, got {type(token_ids).__name__}")
    ids = list(token_ids)
    if any(isinstance(i, (list, tuple)) for i in ids):
        raise TokenizerError("decode takes one sequence of ids; use batch_decode for a batch")
    bad = next((i for i in ids if isinstance(i, bool) or not isinstance(i, (int, np.integer))), None)
    if bad is not None:
        raise TokenizerError(f"decode takes integer token ids, got {bad!r} ({type(bad).__name__})")
    return [int(i) for i in ids]


def to_tensor(values: list[list[int]], return_tensors: str, key: str):
    """Rows of equal length -> an int64 numpy or int32 mlx array."""
    if len({len(v) for v in values}) > 1:
        raise TokenizerError(
            f"cannot make a {return_tensors!r} tensor of {key}: the sequences have different lengths; "
            "pass padding=True (or truncation with max_length)"
        )
    if return_tensors == "np":
        return np.array(values, dtype=np.int64)
    if return_tensors == "mlx":
        import mlx.core as mx

        return mx.array(np.array(values, dtype=np.int32))
    raise TokenizerError(f"return_tensors={return_tensors!r} is not supported; use None, 'np' or 'mlx'")


def _is_batch(text: Any) -> bool:
    return (
        not isinstance(text, str)
        and isinstance(text, (list, tuple))
        and (len(text) == 0 or not isinstance(text[0], (int, np.integer)))
    )


class TokenizerBase:
    """Shared behaviour; see the module docstring for what a subclass provides."""

    model_input_names = ["input_ids", "attention_mask"]
    chat_template: str | dict[str, str] | None = None

    def _init_special(self, values: Sequence[Any], additional: Sequence[Any] | None) -> None:
        """Store bos/eos/unk/pad (in SPECIAL_ATTRS order) and the additional special tokens."""
        self._special: dict[str, AddedToken | None] = {}
        self._additional_special: list[AddedToken] = []
        for attr, value in zip(SPECIAL_ATTRS, values, strict=True):
            self._special[attr] = as_added_token(value, special=True)
        for value in additional or ():
            tok = as_added_token(value, special=True)
            if tok.content not in [t.content for t in self._additional_special]:
                self._additional_special.append(tok)

    # ------------------------------------------------------------------ special tokens
    def _special_tokens_extended(self) -> list[AddedToken]:
        out = [t for t in self._special.values() if t is not None]
        names = {t.content for t in out}
        out += [t for t in self._additional_special if t.content not in names]
        return out

    def _token_str(self, attr: str) -> str | None:
        tok = self._special[attr]
        return None if tok is None else tok.content

    def _set_token(self, attr: str, value: str | AddedToken | None) -> None:
        self._special[attr] = as_added_token(value, special=True)
        self._special_changed()

    def _special_changed(self) -> None:
        """Hook: a subclass drops caches that depend on the special tokens."""

    bos_token = property(lambda self: self._token_str("bos_token"), lambda self, v: self._set_token("bos_token", v))
    eos_token = property(lambda self: self._token_str("eos_token"), lambda self, v: self._set_token("eos_token", v))
    unk_token = property(lambda self: self._token_str("unk_token"), lambda self, v: self._set_token("unk_token", v))
    pad_token = property(lambda self: self._token_str("pad_token"), lambda self, v: self._set_token("pad_token", v))
    bos_token_id = property(lambda self: self.convert_tokens_to_ids(self.bos_token))
    eos_token_id = property(lambda self: self.convert_tokens_to_ids(self.eos_token))
    unk_token_id = property(lambda self: self.convert_tokens_to_ids(self.unk_token))
    pad_token_id = property(lambda self: self.convert_tokens_to_ids(self.pad_token))

    @property
    def additional_special_tokens(self) -> list[str]:
        return [t.content for t in self._additional_special]

    @property
    def all_special_tokens(self) -> list[str]:
        """bos, eos, unk, pad (when set) and the additional special tokens, without duplicates."""
        return [t.content for t in self._special_tokens_extended()]

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    def add_special_tokens(self, special_tokens_dict: dict[str, Any]) -> int:
        """Set special tokens, e.g. `{"pad_token": "<pad>"}`; returns how many new ids were created."""
        new: list[AddedToken] = []
        for key, value in special_tokens_dict.items():
            if key in SPECIAL_ATTRS:
                self._set_token(key, value)
                new.append(self._special[key])
            elif key == "additional_special_tokens":
                for v in value:
                    tok = as_added_token(v, special=True)
                    if tok.content not in self.additional_special_tokens:
                        self._additional_special.append(tok)
                    new.append(tok)
            else:
                raise TokenizerError(
                    f"unknown special token key {key!r}; use one of {', '.join(SPECIAL_ATTRS)} "
                    "or additional_special_tokens"
                )
        return self._register([t for t in new if t is not None])

    def add_tokens(self, tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False) -> int:
        """Add tokens matched verbatim in the text; returns how many new ids were created."""
        if isinstance(tokens, (str, AddedToken)):
            tokens = [tokens]
        new = []
        for value in tokens:
            tok = as_added_token(value, special=special_tokens)
            if special_tokens and tok.content not in self.all_special_tokens:
                self._additional_special.append(tok)
            new.append(tok)
        return self._register(new)

    # ------------------------------------------------------------------ encoding
    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        truncation: bool | str = False,
        max_length: int | None = None,
    ) -> list[int]:
        """Text -> ids, with the tokenizer's special tokens (bos) unless `add_special_tokens=False`."""
        rows = self._encode_rows(
            [text], None if text_pair is None else [text_pair], add_special_tokens, truncation, max_length
        )
        return rows[0]["input_ids"]

    def _truncation_limit(self, truncation: Any, max_length: int | None) -> int | None:
        """The length to truncate to, or None for no truncation."""
        if truncation in (False, None, "do_not_truncate"):
            return None
        if truncation not in (True, "longest_first"):
            raise TokenizerError(f"truncation={truncation!r} is not supported; use True or 'longest_first'")
        return max_length if max_length is not None else self.model_max_length

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        return_token_type_ids: bool = False,
    ) -> BatchEncoding:
        """Encode one text or a batch; returns `input_ids` and `attention_mask` (1 = token, 0 = padding).

        `padding`: False, True/"longest" (to the longest in the batch) or "max_length". `padding_side`:
        "left"/"right" (default `self.padding_side`). `return_tensors`: None (lists), "np" or "mlx"; with
        tensors a single text still gets a batch axis, as in Transformers.
        """
        batched = _is_batch(text)
        texts = list(text) if batched else [text]
        pairs = None
        if text_pair is not None:
            pairs = list(text_pair) if batched else [text_pair]
            if len(pairs) != len(texts):
                raise TokenizerError(f"got {len(texts)} texts but {len(pairs)} text pairs")
        rows = self._encode_rows(texts, pairs, add_special_tokens, truncation, max_length)
        rows = self._pad(rows, padding, max_length, padding_side)
        keys = ["input_ids"]
        if return_token_type_ids:
            keys.append("token_type_ids")
        if return_attention_mask:
            keys.append("attention_mask")
        out = BatchEncoding()
        for key in keys:
            values = [r[key] for r in rows]
            out[key] = to_tensor(values, return_tensors, key) if return_tensors else (values if batched else values[0])
        return out

    def _pad_target(self, rows: list[dict], padding: Any, max_length: int | None) -> int | None:
        if padding in (False, None, "do_not_pad"):
            return None
        if padding in (True, "longest"):
            return max((len(r["input_ids"]) for r in rows), default=0)
        if padding == "max_length":
            target = max_length if max_length is not None else self.model_max_length
            if target is None:
                raise TokenizerError("padding='max_length' needs max_length= (or model_max_length in the config)")
            return target
        raise TokenizerError(f"padding={padding!r} is not valid; use False, True, 'longest' or 'max_length'")

    def _pad(self, rows: list[dict], padding: Any, max_length: int | None, padding_side: str | None) -> list[dict]:
        target = self._pad_target(rows, padding, max_length)
        if target is None:
            return rows
        side = padding_side if padding_side is not None else self.padding_side
        check_side("padding_side", side)
        if self.pad_token_id is None and any(len(r["input_ids"]) < target for r in rows):
            raise TokenizerError(
                "this tokenizer has no pad token, so it cannot pad: set `tok.pad_token = tok.eos_token` or "
                "`tok.add_special_tokens({'pad_token': '<pad>'})` (or pad_token in tokenizer_config.json)"
            )
        fill = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0}
        padded = []
        for row in rows:
            n = target - len(row["input_ids"])
            if n <= 0:
                padded.append(row)
                continue
            padded.append({k: ([fill[k]] * n + v) if side == "left" else (v + [fill[k]] * n) for k, v in row.items()})
        return padded

    # ------------------------------------------------------------------ decoding
    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """Remove the spaces before English punctuation and contractions (`clean_up_tokenization_spaces`)."""
        for old, new in CLEANUP_RULES:
            text = text.replace(old, new)
        return text

    def _maybe_clean_up(self, text: str, clean_up_tokenization_spaces: bool | None) -> str:
        cleanup = (
            self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        )
        return self.clean_up_tokenization(text) if cleanup else text

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        """`decode` for each row of a batch (list of lists or a 2D array)."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(seq, skip_special_tokens=skip_special_tokens, **kwargs) for seq in sequences]

    # ------------------------------------------------------------------ chat
    @property
    def has_chat_template(self) -> bool:
        """True when the checkpoint ships a chat template; False means the documented plain format."""
        return has_chat_template(self)

    def apply_chat_template(self, conversation: Sequence[dict[str, Any]], **kwargs: Any) -> Any:
        """Render a conversation with the checkpoint's Jinja chat template, as Transformers' `apply_chat_template`
        (see `mlx_llama.tokenizer.chat.apply_chat_template` for the arguments); the plain format without one."""
        return apply_chat_template(self, conversation, **kwargs)
