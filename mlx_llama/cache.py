"""KV cache: per-layer key/value buffers preallocated in steps, so decoding never concatenates per token."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from .errors import CheckpointError, ConfigError

CACHE_META_KEY = "mlx_llama.cache_layers"


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

    def to_state(self) -> tuple[dict[str, mx.array], dict]:
        """Arrays and JSON-able settings for a prompt-cache file (`from_state` rebuilds the cache)."""
        state = self.state
        return ({"keys": state[0], "values": state[1]} if state else {}), {"offset": self.offset}

    @classmethod
    def from_state(cls, arrays: dict[str, mx.array], meta: dict) -> KVCache:
        cache = cls()
        if arrays:
            cache.keys, cache.values = arrays["keys"], arrays["values"]
        cache.offset = int(meta["offset"])
        return cache


class RotatingKVCache:
    """A KV cache of at most `max_size` positions: the first `keep` (attention sinks) and a sliding window.

    `offset` counts every position seen (RoPE needs the absolute position); the buffer never holds more than
    `max_size` entries between forwards, so generation past the window runs in bounded memory. Keys are
    stored after RoPE, so their order in the buffer does not matter to a one-token query (no mask). A
    multi-token chunk is attended in time order over the kept entries plus the chunk (causal mask), so during
    a chunked prefill a query may see up to `max_size - 1 + chunk` positions: the window is exact for decoding.
    """

    step = 256

    def __init__(self, max_size: int, keep: int = 4) -> None:
        if max_size <= keep:
            raise ConfigError(f"max_kv_size must exceed the {keep} kept first positions, got {max_size}")
        self.max_size, self.keep = max_size, keep
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0  # positions seen
        self._filled = 0  # valid entries in the buffer
        self._idx = 0  # next write slot

    def _ordered(self) -> tuple[mx.array, mx.array]:
        """The valid entries in time order: the kept first ones, then the window from oldest to newest."""
        k, v, n = self.keys, self.values, self._filled
        if n < self.max_size or self._idx == n:
            return k[..., :n, :], v[..., :n, :]
        parts = [slice(0, self.keep), slice(self._idx, n), slice(self.keep, self._idx)]
        return (
            mx.concatenate([k[..., s, :] for s in parts], axis=2),
            mx.concatenate([v[..., s, :] for s in parts], axis=2),
        )

    def _store(self, keys: mx.array, values: mx.array) -> None:
        """Keep the first `keep` and the last `max_size - keep` of time-ordered entries."""
        n = keys.shape[2]
        if n > self.max_size:
            tail = n - (self.max_size - self.keep)
            keys = mx.concatenate([keys[..., : self.keep, :], keys[..., tail:, :]], axis=2)
            values = mx.concatenate([values[..., : self.keep, :], values[..., tail:, :]], axis=2)
        self.keys, self.values = keys, values
        self._filled = self._idx = keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        new = keys.shape[2]
        self.offset += new
        if new > 1 or self.keys is None:
            if self.keys is not None:
                old_k, old_v = self._ordered()
                keys, values = mx.concatenate([old_k, keys], axis=2), mx.concatenate([old_v, values], axis=2)
            self._store(keys, values)
            return keys, values
        cap = self.keys.shape[2]
        if self._idx >= cap and cap < self.max_size:
            grow = min(self.step, self.max_size - cap)
            shape = lambda a: (*a.shape[:2], grow, a.shape[3])  # noqa: E731
            self.keys = mx.concatenate([self.keys, mx.zeros(shape(self.keys), keys.dtype)], axis=2)
            self.values = mx.concatenate([self.values, mx.zeros(shape(self.values), values.dtype)], axis=2)
        if self._idx >= self.max_size:
            self._idx = self.keep  # overwrite the oldest window entry
        self.keys[..., self._idx : self._idx + 1, :] = keys
        self.values[..., self._idx : self._idx + 1, :] = values
        self._idx += 1
        self._filled = max(self._filled, self._idx)
        return self.keys[..., : self._filled, :], self.values[..., : self._filled, :]

    @property
    def state(self) -> list[mx.array]:
        return [] if self.keys is None else [self.keys, self.values]

    def trim(self, n: int) -> int:
        """Forget the newest n positions (the window shrinks by n until new tokens refill it)."""
        n = min(n, self._filled, self.offset)
        if n <= 0 or self.keys is None:
            return 0
        k, v = self._ordered()
        self.keys, self.values = k[..., : k.shape[2] - n, :], v[..., : v.shape[2] - n, :]
        self._filled = self._idx = self.keys.shape[2]
        self.offset -= n
        return n

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes

    def to_state(self) -> tuple[dict[str, mx.array], dict]:
        if self.keys is None:
            return {}, {"offset": 0, "max_size": self.max_size, "keep": self.keep}
        k, v = self._ordered()
        return {"keys": k, "values": v}, {"offset": self.offset, "max_size": self.max_size, "keep": self.keep}

    @classmethod
    def from_state(cls, arrays: dict[str, mx.array], meta: dict) -> RotatingKVCache:
        cache = cls(int(meta["max_size"]), int(meta["keep"]))
        if arrays:
            cache._store(arrays["keys"], arrays["values"])
        cache.offset = int(meta["offset"])
        return cache


class QuantizedKVCache:
    """Keys and values stored quantized (affine, `bits` per value, one scale/bias per `group_size`), in steps.

    Attention still gets float keys/values: each forward dequantizes this layer's filled part, so only one
    layer's float copy exists at a time while the stored cache is 4-8x smaller than a float32 one. Up to
    `start` positions are kept in float and quantized all at once when the cache grows past it.
    """

    step = 256

    def __init__(self, group_size: int = 64, bits: int = 8, start: int = 0) -> None:
        if bits not in (2, 3, 4, 5, 6, 8):
            raise ConfigError(f"kv_bits must be one of 2, 3, 4, 5, 6, 8, got {bits}")
        if group_size not in (32, 64, 128):
            raise ConfigError(f"kv_group_size must be 32, 64 or 128, got {group_size}")
        self.group_size, self.bits, self.start = group_size, bits, start
        self.offset = 0
        self.keys: tuple[mx.array, ...] | None = None  # (packed, scales, biases)
        self.values: tuple[mx.array, ...] | None = None
        self.dtype = mx.float32
        self._float: KVCache | None = KVCache() if start > 0 else None

    def _quantize(self, x: mx.array) -> tuple[mx.array, ...]:
        if x.shape[-1] % self.group_size:
            raise ConfigError(f"kv_group_size {self.group_size} must divide the head dimension {x.shape[-1]}")
        return tuple(mx.quantize(x, group_size=self.group_size, bits=self.bits))

    def _dequantize(self, q: tuple[mx.array, ...], end: int) -> mx.array:
        w, s, b = (a[..., :end, :] for a in q)
        return mx.dequantize(w, s, b, group_size=self.group_size, bits=self.bits).astype(self.dtype)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self._float is not None:
            if self._float.offset + keys.shape[2] <= self.start:
                out = self._float.update_and_fetch(keys, values)
                self.offset = self._float.offset
                return out
            held, self._float = self._float.state, None
            self.offset = 0
            if held:
                self.update_and_fetch(*held)
        self.dtype = keys.dtype
        prev, new = self.offset, keys.shape[2]
        qk, qv = self._quantize(keys), self._quantize(values)
        if self.keys is None or prev + new > self.keys[0].shape[2]:
            n_steps = (self.step + new - 1) // self.step

            def grow(old: tuple[mx.array, ...] | None, fresh: tuple[mx.array, ...]) -> tuple[mx.array, ...]:
                zeros = [mx.zeros((*a.shape[:2], n_steps * self.step, a.shape[3]), a.dtype) for a in fresh]
                if old is None:
                    return tuple(zeros)
                return tuple(mx.concatenate([o[..., :prev, :], z], axis=2) for o, z in zip(old, zeros))

            self.keys, self.values = grow(self.keys, qk), grow(self.values, qv)
        self.offset += new
        for store, fresh in ((self.keys, qk), (self.values, qv)):
            for a, f in zip(store, fresh):
                a[..., prev : self.offset, :] = f
        return self._dequantize(self.keys, self.offset), self._dequantize(self.values, self.offset)

    @property
    def state(self) -> list[mx.array]:
        if self._float is not None:
            return self._float.state
        if self.keys is None:
            return []
        return [a[..., : self.offset, :] for a in (*self.keys, *self.values)]

    def trim(self, n: int) -> int:
        if self._float is not None:
            n = self._float.trim(n)
            self.offset = self._float.offset
            return n
        n = min(self.offset, n)
        self.offset -= n
        return n

    @property
    def nbytes(self) -> int:
        if self._float is not None:
            return self._float.nbytes
        return 0 if self.keys is None else sum(a.nbytes for a in (*self.keys, *self.values))

    def to_state(self) -> tuple[dict[str, mx.array], dict]:
        meta = {
            "offset": self.offset,
            "group_size": self.group_size,
            "bits": self.bits,
            "start": self.start,
            "dtype": str(self.dtype).split(".")[-1],
            "float": self._float is not None,
        }
        if self._float is not None:
            return self._float.to_state()[0], meta
        names = ("keys", "key_scales", "key_biases", "values", "value_scales", "value_biases")
        return dict(zip(names, self.state)), meta

    @classmethod
    def from_state(cls, arrays: dict[str, mx.array], meta: dict) -> QuantizedKVCache:
        cache = cls(int(meta["group_size"]), int(meta["bits"]), int(meta["start"]))
        cache.dtype = getattr(mx, meta["dtype"])
        if meta["float"]:
            cache._float = KVCache.from_state(arrays, {"offset": meta["offset"]})
        elif arrays:
            cache.keys = (arrays["keys"], arrays["key_scales"], arrays["key_biases"])
            cache.values = (arrays["values"], arrays["value_scales"], arrays["value_biases"])
        cache.offset = int(meta["offset"])
        return cache


CACHE_CLASSES = {"KVCache": KVCache, "RotatingKVCache": RotatingKVCache, "QuantizedKVCache": QuantizedKVCache}


CACHE_OPTIONS = ("max_kv_size", "kv_bits", "kv_group_size", "quantized_kv_start", "keep")


def check_cache_options(options: dict, have_cache: bool = False) -> dict:
    """The given (non-None) KV cache options; a clear error for unknown names or options beside a given cache."""
    unknown = sorted(set(options) - set(CACHE_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; the KV cache options are {', '.join(CACHE_OPTIONS)}"
        )
    given = {k: v for k, v in options.items() if v is not None}
    if given and have_cache:
        raise ConfigError(f"{', '.join(given)} choose a new KV cache: not with cache= (it already has its kind)")
    return given


def make_cache(
    num_layers: int,
    max_kv_size: int | None = None,
    kv_bits: int | None = None,
    kv_group_size: int = 64,
    quantized_kv_start: int = 0,
    keep: int = 4,
) -> list:
    """One fresh cache per decoder layer: float (default), rotating (`max_kv_size`) or quantized (`kv_bits`)."""
    if max_kv_size is not None and kv_bits is not None:
        raise ConfigError("choose a rotating (max_kv_size) or a quantized (kv_bits) KV cache, not both")
    if max_kv_size is not None:
        return [RotatingKVCache(max_kv_size, keep) for _ in range(num_layers)]
    if kv_bits is not None:
        return [QuantizedKVCache(kv_group_size, kv_bits, quantized_kv_start) for _ in range(num_layers)]
    return [KVCache() for _ in range(num_layers)]


def transformers_cache_options(
    cache_implementation: str | None, cache_config: dict | None, padded: bool = False
) -> dict:
    """`make_cache` options from Transformers' `cache_implementation` / `cache_config` spelling.

    "dynamic", "static" (or None) is the float cache; "quantized" takes `nbits` (default 4), `q_group_size` (64) and
    `residual_length` (positions kept in float first, default 0); "sliding_window"/"rotating" take
    `max_kv_size` (or `sliding_window`) and `keep` (default 4).
    """
    cfg = dict(cache_config or {})
    if cache_implementation in (None, "dynamic", "static"):  # ours is preallocated, i.e. already "static"
        return {}
    if cache_implementation == "quantized":
        return {
            "kv_bits": int(cfg.get("nbits", 4)),
            "kv_group_size": int(cfg.get("q_group_size", 64)),
            "quantized_kv_start": int(cfg.get("residual_length", 0)),
        }
    if cache_implementation in ("sliding_window", "rotating"):
        size = cfg.get("max_kv_size", cfg.get("sliding_window"))
        if size is None:
            raise ConfigError(f"cache_implementation={cache_implementation!r} needs cache_config={{'max_kv_size': N}}")
        if padded:
            raise ConfigError("a rotating (sliding_window) KV cache takes unpadded prompts: no padding in the batch")
        return {"max_kv_size": int(size), "keep": int(cfg.get("keep", 4))}
    raise ConfigError(
        f"cache_implementation {cache_implementation!r} is not supported; "
        "use 'dynamic', 'quantized' or 'sliding_window'"
    )


def save_cache_file(path: str | Path, cache: list, metadata: dict[str, str]) -> None:
    """Write every layer's state to one safetensors file; `metadata` (strings) is stored alongside."""
    arrays, layers = {}, []
    for i, layer in enumerate(cache):
        state, meta = layer.to_state()
        arrays.update({f"{i}.{name}": a for name, a in state.items()})
        layers.append({"class": type(layer).__name__, **meta})
    mx.save_safetensors(str(path), arrays, metadata={**metadata, CACHE_META_KEY: json.dumps(layers)})


def load_cache_file(path: str | Path) -> tuple[list, dict[str, str]]:
    """Read a file written by `save_cache_file`: (caches, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such prompt-cache file")
    try:
        arrays, metadata = mx.load(str(path), return_metadata=True)
        layers = json.loads(metadata.pop(CACHE_META_KEY))
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a prompt-cache file ({e})") from e
    cache = []
    for i, meta in enumerate(layers):
        prefix = f"{i}."
        state = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        cache.append(CACHE_CLASSES[meta.pop("class")].from_state(state, meta))
    return cache, metadata
