"""A KV cache for a batch whose rows join and leave: rows are right-aligned, each with its own left padding.

All rows share one write position (`offset`); row i's real keys sit in slots [left_pad[i], offset), so its
next token has position offset - left_pad[i] and attends only to slots >= left_pad[i]. A joining row is
prefilled on its own (exactly as a single request would be) and then merged in, left-padded to the
batch's length; a leaving row is dropped and the padding every remaining row shares is cut off.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

STEP = 256


class BatchLayerCache:
    """One layer's keys/values [B, n_kv, capacity, D]; same contract as cache.KVCache (update_and_fetch, offset)."""

    def __init__(self, keys: mx.array | None = None, values: mx.array | None = None) -> None:
        self.keys, self.values = keys, values
        self.offset = 0 if keys is None else keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        prev, new = self.offset, keys.shape[2]
        if self.keys is None:
            b, h, _, dk = keys.shape
            self.keys = mx.zeros((b, h, 0, dk), keys.dtype)
            self.values = mx.zeros((b, h, 0, values.shape[3]), values.dtype)
        if prev + new > self.keys.shape[2]:
            b, h, _, dk = self.keys.shape
            grow = ((new + STEP - 1) // STEP) * STEP
            self.keys = mx.concatenate([self.keys[..., :prev, :], mx.zeros((b, h, grow, dk), keys.dtype)], axis=2)
            dv = self.values.shape[3]
            self.values = mx.concatenate([self.values[..., :prev, :], mx.zeros((b, h, grow, dv), values.dtype)], axis=2)
        self.offset += new
        self.keys[..., prev : self.offset, :] = keys
        self.values[..., prev : self.offset, :] = values
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    @property
    def state(self) -> list[mx.array]:
        return [self.keys[..., : self.offset, :], self.values[..., : self.offset, :]]


def _pad_left(x: mx.array, n: int) -> mx.array:
    if n == 0:
        return x
    b, h, _, d = x.shape
    return mx.concatenate([mx.zeros((b, h, n, d), x.dtype), x], axis=2)


def row_kv(cache: Sequence) -> list[tuple[mx.array, mx.array]]:
    """The filled keys/values [1, n_kv, L, D] of every layer of a single-row cache (cache.KVCache or ours)."""
    return [(layer.keys[..., : layer.offset, :], layer.values[..., : layer.offset, :]) for layer in cache]


class BatchCache:
    """The per-layer caches of the running batch plus each row's left padding (host list)."""

    def __init__(self) -> None:
        self.layers: list[BatchLayerCache] = []
        self.left_pad: list[int] = []

    @property
    def size(self) -> int:
        return len(self.left_pad)

    @property
    def offset(self) -> int:
        return self.layers[0].offset if self.layers else 0

    def add_row(self, kv: list[tuple[mx.array, mx.array]]) -> None:
        """Append a row given its per-layer keys/values [1, n_kv, L, D] (L >= 1), aligning it on the right."""
        length = kv[0][0].shape[2]
        if not self.layers:
            self.layers = [BatchLayerCache(k, v) for k, v in kv]
            self.left_pad = [0]
            return
        offset = self.offset
        grow = max(length - offset, 0)
        pad_new = max(offset - length, 0)
        for layer, (k, v) in zip(self.layers, kv):
            old_k, old_v = _pad_left(layer.keys[..., :offset, :], grow), _pad_left(layer.values[..., :offset, :], grow)
            layer.keys = mx.concatenate([old_k, _pad_left(k, pad_new)], axis=0)
            layer.values = mx.concatenate([old_v, _pad_left(v, pad_new)], axis=0)
            layer.offset = offset + grow
        self.left_pad = [p + grow for p in self.left_pad] + [pad_new]

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (indices, in order); drop the left columns that are padding in every kept row."""
        if not rows:
            self.layers, self.left_pad = [], []
            return
        pads = [self.left_pad[i] for i in rows]
        cut = min(pads)
        index = mx.array(list(rows), dtype=mx.int32)
        for layer in self.layers:
            end = layer.offset
            layer.keys = layer.keys[index, :, cut:end, :]
            layer.values = layer.values[index, :, cut:end, :]
            layer.offset = end - cut
        self.left_pad = [p - cut for p in pads]

    def row(self, i: int) -> list[tuple[mx.array, mx.array]]:
        """Row i's real keys/values [1, n_kv, L, D] per layer (its left padding removed)."""
        start = self.left_pad[i]
        return [
            (layer.keys[i : i + 1, :, start : layer.offset, :], layer.values[i : i + 1, :, start : layer.offset, :])
            for layer in self.layers
        ]

    def step_inputs(self) -> tuple[mx.array | None, mx.array | None]:
        """(4D boolean mask, [B, 1] position ids) for one decode step; (None, None) when nothing is padded."""
        if not any(self.left_pad):
            return None, None
        pad = mx.array(self.left_pad, dtype=mx.int32)[:, None]
        mask = (mx.arange(self.offset + 1)[None, :] >= pad)[:, None, None, :]
        return mask, self.offset - pad
