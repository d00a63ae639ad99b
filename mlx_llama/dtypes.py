"""The one place where dtype names are parsed (config.json, CLI flags, safetensors headers)."""

from __future__ import annotations

import mlx.core as mx

from .errors import ConfigError

_BY_NAME = {
    "float32": mx.float32,
    "fp32": mx.float32,
    "float": mx.float32,
    "float16": mx.float16,
    "fp16": mx.float16,
    "half": mx.float16,
    "bfloat16": mx.bfloat16,
    "bf16": mx.bfloat16,
}

NAMES = {mx.float32: "float32", mx.float16: "float16", mx.bfloat16: "bfloat16"}


def parse_dtype(value: str | mx.Dtype | None, what: str = "dtype") -> mx.Dtype | None:
    """Map 'float16' / 'torch.float16' / 'bf16' / an mx.Dtype to an mx.Dtype; None stays None."""
    if value is None or isinstance(value, mx.Dtype):
        return value
    key = str(value).lower().removeprefix("torch.").removeprefix("mx.").removeprefix("mlx.core.")
    if key not in _BY_NAME:
        raise ConfigError(f"{what}: unknown dtype {value!r}; expected one of float32, float16, bfloat16")
    return _BY_NAME[key]


def dtype_name(dtype: mx.Dtype) -> str:
    """'float16' for mx.float16, as written in config.json's `torch_dtype`."""
    return NAMES.get(dtype, str(dtype).removeprefix("mlx.core."))
