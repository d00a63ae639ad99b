"""Rotary position embeddings: every `rope_scaling` type of Transformers 4.57, applied with `mx.fast.rope`.

Each type reduces to a vector of inverse frequencies (computed on the host in float32, the way Transformers
computes them) plus an attention factor. `mx.fast.rope` takes their reciprocals as `freqs` (periods). The
stateful types (dynamic NTK, longrope) change that vector between forwards exactly as Transformers does.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import ConfigError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")
_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor",),
    "longrope": ("short_factor", "long_factor"),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
}


def rope_type_of(rope_scaling: dict[str, Any] | None) -> str:
    """The rope type a config asks for ("default" when there is no rope_scaling)."""
    if rope_scaling is None:
        return "default"
    return rope_scaling.get("rope_type", rope_scaling.get("type", "default"))


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def validate_rope_scaling(rope_scaling: dict[str, Any] | None, head_dim: int, max_position_embeddings: int) -> None:
    """Raise ConfigError for a rope_scaling the model cannot run with.

    Stricter than Transformers 4.57, which raises only for a missing key and merely warns about bad values:
    a factor below 1 or a malformed longrope list would silently give a different model, so we refuse them.
    """
    if rope_scaling is None:
        return
    if not isinstance(rope_scaling, dict):
        raise ConfigError(f"config field `rope_scaling` must be a dict or null, got {type(rope_scaling).__name__}")
    if "rope_type" not in rope_scaling and "type" not in rope_scaling:
        raise ConfigError("config field `rope_scaling` needs a `rope_type` key (one of " + ", ".join(ROPE_TYPES) + ")")
    rope_type = rope_type_of(rope_scaling)
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"config field `rope_scaling.rope_type` is {rope_type!r}; expected one of {ROPE_TYPES}")
    missing = [k for k in _REQUIRED[rope_type] if k not in rope_scaling]
    if missing:
        raise ConfigError(f"config field `rope_scaling` of type {rope_type!r} is missing required key(s) {missing}")
    factor = rope_scaling.get("factor")
    if rope_type != "default" and factor is not None and (not _is_number(factor) or factor < 1):
        raise ConfigError(f"config field `rope_scaling.factor` must be a number >= 1, got {factor!r}")
    if rope_type == "yarn":
        for key in ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            value = rope_scaling.get(key)
            if value is not None and (not _is_number(value) or value < 0):
                raise ConfigError(f"config field `rope_scaling.{key}` must be a non-negative number, got {value!r}")
        fast, slow = rope_scaling.get("beta_fast") or 32, rope_scaling.get("beta_slow") or 1
        if fast < slow:
            raise ConfigError(f"config field `rope_scaling.beta_fast` ({fast}) must be >= `beta_slow` ({slow})")
    if rope_type == "longrope":
        for key in ("short_factor", "long_factor"):
            value = rope_scaling[key]
            if not isinstance(value, (list, tuple)) or len(value) != head_dim // 2 or not all(map(_is_number, value)):
                raise ConfigError(
                    f"config field `rope_scaling.{key}` must be a list of {head_dim // 2} numbers (head_dim // 2)"
                )
        attention_factor = rope_scaling.get("attention_factor")
        if attention_factor is not None and (not _is_number(attention_factor) or attention_factor < 0):
            raise ConfigError(f"config field `rope_scaling.attention_factor` must be >= 0, got {attention_factor!r}")
    if rope_type == "llama3":
        low, high = rope_scaling["low_freq_factor"], rope_scaling["high_freq_factor"]
        if not (_is_number(low) and _is_number(high) and high > low > 0):
            raise ConfigError(
                f"config fields `rope_scaling.low_freq_factor` ({low!r}) and `high_freq_factor` ({high!r}) "
                "must be positive numbers with high > low"
            )
        original = rope_scaling["original_max_position_embeddings"]
        if not isinstance(original, int) or original <= 0:
            raise ConfigError(
                f"config field `rope_scaling.original_max_position_embeddings` must be a positive int, got {original!r}"
            )


def _default_inv_freq(base: float, dim: int) -> np.ndarray:
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (1.0 / (np.float32(base) ** exponents)).astype(np.float32)


def _yarn(scaling: dict[str, Any], base: float, dim: int, max_pos: int) -> tuple[np.ndarray, float]:
    factor = scaling["factor"]
    original = scaling.get("original_max_position_embeddings") or max_pos

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = scaling.get("attention_factor")
    if attention is None:
        if scaling.get("mscale") and scaling.get("mscale_all_dim"):
            attention = mscale(factor, scaling["mscale"]) / mscale(factor, scaling["mscale_all_dim"])
        else:
            attention = mscale(factor)

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(scaling.get("beta_fast") or 32), correction_dim(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim))
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (np.float32(factor) * pos_freqs)
    extrapolation_weight = 1 - ramp
    inv = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv.astype(np.float32), float(attention)


def _llama3(scaling: dict[str, Any], inv: np.ndarray) -> np.ndarray:
    factor, old = scaling["factor"], scaling["original_max_position_embeddings"]
    low_ff, high_ff = scaling["low_freq_factor"], scaling["high_freq_factor"]
    low_wavelen, high_wavelen = old / low_ff, old / high_ff
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


class RotaryEmbedding:
    """One object per model (like `model.rotary_emb` in Transformers), shared by every attention layer.

    Call `update(seq_len)` once per forward with the largest position + 1, then apply it to q and k.
    It is a plain object, not an nn.Module, so its frequencies never appear among the parameters.
    """

    def __init__(
        self,
        head_dim: int,
        rope_theta: float,
        max_position_embeddings: int,
        rope_scaling: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        scaling = rope_scaling or {}
        self.dims = head_dim
        self.base = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.rope_type = rope_type_of(rope_scaling)
        self.attention_scaling = 1.0
        inv = _default_inv_freq(rope_theta, head_dim)
        if self.rope_type == "linear":
            inv = (inv / np.float32(scaling["factor"])).astype(np.float32)
        elif self.rope_type == "dynamic":
            self.factor = scaling["factor"]
            self.max_seq_len_cached = max_position_embeddings
        elif self.rope_type == "yarn":
            inv, self.attention_scaling = _yarn(scaling, rope_theta, head_dim, max_position_embeddings)
        elif self.rope_type == "longrope":
            top_level = (extra or {}).get("original_max_position_embeddings")
            if top_level:  # Phi-3 style config: the factor is implied by the two lengths
                factor, self.original_max = max_position_embeddings / top_level, top_level
            else:
                factor, self.original_max = scaling.get("factor", 1.0), max_position_embeddings
            attention = scaling.get("attention_factor")
            if attention is None:
                attention = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(self.original_max))
            self.attention_scaling = float(attention)
            exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
            powers = np.float32(rope_theta) ** exponents
            self.long_inv = (1.0 / (np.asarray(scaling["long_factor"], np.float32) * powers)).astype(np.float32)
            inv = (1.0 / (np.asarray(scaling["short_factor"], np.float32) * powers)).astype(np.float32)
        elif self.rope_type == "llama3":
            inv = _llama3(scaling, inv)
        self.original_inv = inv
        self._set_inv(inv)

    def _set_inv(self, inv: np.ndarray) -> None:
        self.inv_freq = inv
        self.freqs = mx.array((1.0 / inv).astype(np.float32))

    def update(self, seq_len: int) -> None:
        """Move the stateful rope types to the frequencies Transformers would use for this forward."""
        if self.rope_type == "dynamic":
            if seq_len > self.max_seq_len_cached:
                m, d = self.max_position_embeddings, self.dims
                base = self.base * ((self.factor * seq_len / m) - (self.factor - 1)) ** (d / (d - 2))
                self._set_inv(_default_inv_freq(base, d))
                self.max_seq_len_cached = seq_len
            elif seq_len < self.max_position_embeddings < self.max_seq_len_cached:
                self._set_inv(self.original_inv)
                self.max_seq_len_cached = self.max_position_embeddings
        elif self.rope_type == "longrope":
            self._set_inv(self.long_inv if seq_len > self.original_max else self.original_inv)

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        """Rotate x [B, H, T, D] for positions offset + arange(T); offset is an int or one per batch row."""
        if self.attention_scaling != 1.0:
            x = x * self.attention_scaling
        return mx.fast.rope(x, self.dims, traditional=False, base=None, scale=1.0, offset=offset, freqs=self.freqs)

    def apply_positions(self, x: mx.array, position_ids: mx.array) -> mx.array:
        """Rotate x [B, H, T, D] for arbitrary positions [B, T] (packed or shuffled), the unfused way."""
        angles = position_ids[:, None, :, None].astype(mx.float32) * mx.array(self.inv_freq)
        cos = (mx.cos(angles) * self.attention_scaling).astype(x.dtype)
        sin = (mx.sin(angles) * self.attention_scaling).astype(x.dtype)
        half = self.dims // 2
        x1, x2 = x[..., :half], x[..., half:]
        return mx.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
