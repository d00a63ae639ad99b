"""Token ids from callers: a non-empty [batch, length] integer array whose every id is inside the vocabulary.

An id outside the embedding reads memory that is not the table (garbage, or a crash), so every entry point
checks its ids here. The check reads the ids back on the host; the decode loop feeds the model ids it has just
sampled from the model's own logits, which are in range by construction, so it marks those calls trusted
(`trusted_ids()`) and keeps the device one step ahead of the host.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import InputError, shorten

_TRUSTED = contextvars.ContextVar("mlx_llama_trusted_ids", default=False)


@contextlib.contextmanager
def trusted_ids() -> Iterator[None]:
    """Within this block, mx.array ids passed to a model are not read back for checking."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _host(ids: Any, what: str) -> np.ndarray:
    if isinstance(ids, (str, bytes)):
        raise InputError(
            f"{what} must be token ids (an integer array), got text {shorten(ids, 40)}; encode it "
            "with the tokenizer first"
        )
    if hasattr(ids, "detach"):  # a torch tensor
        ids = ids.detach().cpu().numpy()
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what} must be a rectangular array of token ids ({exc})") from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
    return arr


def check_ids(ids: Any, vocab_size: int, what: str = "input_ids", ndim: int = 2) -> mx.array:
    """`ids` as an int32 mx.array of shape [batch, length] (ndim 2) or [length] (ndim 1), or InputError
    (a ValueError) naming the offending id and the vocabulary size."""
    if isinstance(ids, mx.array):
        if _TRUSTED.get():
            return ids if ids.dtype == mx.int32 else ids.astype(mx.int32)
        if not mx.issubdtype(ids.dtype, mx.integer):
            raise InputError(f"{what} must hold integer token ids, got dtype {ids.dtype}")
        low, high = (int(v) for v in mx.stack([ids.min(), ids.max()]).tolist()) if ids.size else (0, 0)
        shape = tuple(ids.shape)
    else:
        arr = _host(ids, what)
        low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        shape = arr.shape
    if len(shape) != ndim or 0 in shape:
        want = "[batch, length]" if ndim == 2 else "[length]"
        raise InputError(f"{what} must be a non-empty {want} array of token ids, got shape {list(shape)}")
    bad = low if low < 0 else high if high >= vocab_size else None
    if bad is not None:
        raise InputError(
            f"{what} holds the id {bad}, outside the vocabulary of {vocab_size} ids (0 .. {vocab_size - 1})"
        )
    if isinstance(ids, mx.array):
        return ids if ids.dtype == mx.int32 else ids.astype(mx.int32)
    return mx.array(arr.astype(np.int32))
