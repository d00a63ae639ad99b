"""The one table of tensor element types a checkpoint may hold: safetensors codes, torch storage classes,
the numpy type of the raw bytes and the MLX type. bfloat16 travels as raw uint16 (numpy has no bfloat16)."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class TensorDtype:
    """One element type under all the names the formats give it."""

    name: str  # ours, as in config.json's torch_dtype: 'bfloat16', 'float16', 'int64', ...
    code: str  # safetensors header code: 'BF16', 'F16', 'I64', ...
    raw: type  # numpy type holding the bytes
    mx: mx.Dtype
    storage: str | None  # torch's legacy storage class name, None where torch has none

    @property
    def itemsize(self) -> int:
        return np.dtype(self.raw).itemsize


_ALL = (
    TensorDtype("float32", "F32", np.float32, mx.float32, "FloatStorage"),
    TensorDtype("float16", "F16", np.float16, mx.float16, "HalfStorage"),
    TensorDtype("bfloat16", "BF16", np.uint16, mx.bfloat16, "BFloat16Storage"),
    TensorDtype("float64", "F64", np.float64, mx.float64, "DoubleStorage"),
    TensorDtype("int64", "I64", np.int64, mx.int64, "LongStorage"),
    TensorDtype("int32", "I32", np.int32, mx.int32, "IntStorage"),
    TensorDtype("int16", "I16", np.int16, mx.int16, "ShortStorage"),
    TensorDtype("int8", "I8", np.int8, mx.int8, "CharStorage"),
    TensorDtype("uint64", "U64", np.uint64, mx.uint64, None),
    TensorDtype("uint32", "U32", np.uint32, mx.uint32, None),
    TensorDtype("uint16", "U16", np.uint16, mx.uint16, None),
    TensorDtype("uint8", "U8", np.uint8, mx.uint8, "ByteStorage"),
    TensorDtype("bool", "BOOL", np.bool_, mx.bool_, "BoolStorage"),
)
BY_NAME = {d.name: d for d in _ALL}
BY_CODE = {d.code: d for d in _ALL}
BY_STORAGE = {d.storage: d for d in _ALL if d.storage}
FLOATS = frozenset({"float32", "float16", "bfloat16", "float64"})


def itemsize(name: str) -> int:
    """Bytes per element of a dtype name."""
    return BY_NAME[name].itemsize
