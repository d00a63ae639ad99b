"""KV cache: per-layer key/value buffers preallocated in steps, so decoding never concatenates per token."""

from __future__ import annotations

import mlx.core as mx


class KVCache:
    """Keys and values of one attention layer, [B, n_kv_heads, capacity, head_dim], grown `step` slots at a time.

    `offset` is how many positions are filled; `update_and_fetch` writes new entries in place and returns
    views of the filled part, which is what attention reads.
    """

    step = 256

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Append keys/values [B, n_kv, T, D] (after RoPE) and return all cached ones."""
        prev, new = self.offset, keys.shape[2]
        if self.keys is None or prev + new > self.keys.shape[2]:
            batch, heads, _, k_dim = keys.shape
            v_dim = values.shape[3]
            n_steps = (self.step + new - 1) // self.step
            k_grow = mx.zeros((batch, heads, n_steps * self.step, k_dim), keys.dtype)
            v_grow = mx.zeros((batch, heads, n_steps * self.step, v_dim), values.dtype)
            if self.keys is None:
                self.keys, self.values = k_grow, v_grow
            else:
                self.keys = mx.concatenate([self.keys[..., :prev, :], k_grow], axis=2)
                self.values = mx.concatenate([self.values[..., :prev, :], v_grow], axis=2)
        self.offset += new
        self.keys[..., prev : self.offset, :] = keys
        self.values[..., prev : self.offset, :] = values
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    @property
    def state(self) -> list[mx.array]:
        """The arrays to `mx.eval` to materialise the cache (e.g. after a prefill chunk)."""
        if self.keys is None:
            return []
        return [self.keys[..., : self.offset, :], self.values[..., : self.offset, :]]

    def trim(self, n: int) -> int:
        """Forget the last n positions (cheap: only moves the offset); returns how many were dropped."""
        n = min(self.offset, n)
        self.offset -= n
        return n

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


def make_cache(num_layers: int) -> list[KVCache]:
    """One fresh cache per decoder layer."""
    return [KVCache() for _ in range(num_layers)]
