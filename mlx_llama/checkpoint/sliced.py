"""Read only part of a safetensors checkpoint: one rank of a parallel model maps just its own byte ranges.

`mx.load` maps whole tensors: slicing a lazily loaded array still reads all of it when evaluated. Here
the header is parsed (and checked) once, and a slice along one axis is read through a NumPy memory map,
so a rank touches only the pages of its rows (axis 0: one contiguous range; axis 1: one range per row).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import CheckpointError

MAX_HEADER_BYTES = 100 * 10**6  # the reference implementation's limit: a larger header means a corrupt file

# safetensors dtype -> (numpy dtype used to read the bytes, mx dtype of the result)
DTYPES: dict[str, tuple[np.dtype, mx.Dtype]] = {
    "F64": (np.dtype("<f8"), mx.float32),
    "F32": (np.dtype("<f4"), mx.float32),
    "F16": (np.dtype("<f2"), mx.float16),
    "BF16": (np.dtype("<u2"), mx.bfloat16),  # NumPy has no bfloat16: read the bits, view them in MLX
    "I64": (np.dtype("<i8"), mx.int64),
    "I32": (np.dtype("<i4"), mx.int32),
    "I16": (np.dtype("<i2"), mx.int16),
    "I8": (np.dtype("i1"), mx.int8),
    "U64": (np.dtype("<u8"), mx.uint64),
    "U32": (np.dtype("<u4"), mx.uint32),
    "U16": (np.dtype("<u2"), mx.uint16),
    "U8": (np.dtype("u1"), mx.uint8),
    "BOOL": (np.dtype("?"), mx.bool_),
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie: absolute file offset of its first byte, dtype and shape."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype][0].itemsize


def read_header(file: Path) -> dict[str, TensorEntry]:
    """Parse and validate one file's header: length cap, JSON, dtypes, shapes and offsets inside the file."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file}: too short for a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise CheckpointError(f"{file}: header length {n} is past the file end or over {MAX_HEADER_BYTES} bytes; "
                                  "is it truncated or corrupt?")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{file}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: header must be a JSON object")
    data_start, data_size = 8 + n, size - 8 - n
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(file, name, info, data_start, data_size)
    return entries


def _entry(file: Path, name: str, info: object, data_start: int, data_size: int) -> TensorEntry:
    if not isinstance(info, dict):
        raise CheckpointError(f"{file}: tensor {name}: header entry must be an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise CheckpointError(f"{file}: tensor {name}: dtype {dtype!r} is not supported; expected one of "
                              f"{', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise CheckpointError(f"{file}: tensor {name}: shape {shape!r} must be a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise CheckpointError(f"{file}: tensor {name}: data_offsets {offsets!r} must be two integers")
    begin, end = offsets
    entry = TensorEntry(file, dtype, tuple(shape), data_start + begin)
    if not 0 <= begin <= end <= data_size or end - begin != entry.nbytes:
        raise CheckpointError(f"{file}: tensor {name}: data_offsets {offsets} do not fit its shape {shape} and "
                              f"dtype {dtype} inside the {data_size}-byte data section")
    return entry


class SlicedReader:
    """The tensors of one or more safetensors files, read whole or as the k-th of n equal parts of one axis."""

    def __init__(self, files: list[Path]) -> None:
        self.entries: dict[str, TensorEntry] = {}
        for file in files:
            self.entries.update(read_header(Path(file)))
        self.bytes_read = 0

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def part_range(self, name: str, axis: int, part: int, parts: int, multiple: int = 1) -> tuple[int, int]:
        """[start, stop) of part `part` of `parts` along `axis`; its length must be a multiple of `multiple`."""
        shape = self.entry(name).shape
        if axis >= len(shape):
            raise CheckpointError(f"{self.entries[name].file}: tensor {name} has shape {shape}, no axis {axis} "
                                  f"to split across {parts} ranks")
        length = shape[axis]
        if length % (parts * multiple) != 0:
            unit = f" in blocks of {multiple}" if multiple > 1 else ""
            raise CheckpointError(f"{self.entries[name].file}: tensor {name}: axis {axis} of size {length} "
                                  f"cannot be split evenly across {parts} ranks{unit}")
        step = length // parts
        return part * step, (part + 1) * step

    def entry(self, name: str) -> TensorEntry:
        if name not in self.entries:
            raise CheckpointError(f"tensor {name} is missing from the checkpoint")
        return self.entries[name]

    def read(self, name: str, axis: int | None = None, start: int = 0, stop: int | None = None) -> mx.array:
        """The tensor, or its [start:stop) slice along `axis`, copied from a memory map into an mx.array."""
        entry = self.entry(name)
        np_dtype, mx_dtype = DTYPES[entry.dtype]
        if entry.nbytes == 0:
            return mx.zeros(entry.shape, mx_dtype)
        data = np.memmap(entry.file, dtype=np_dtype, mode="r", offset=entry.offset, shape=entry.shape)
        if axis is not None:
            index = [slice(None)] * len(entry.shape)
            index[axis] = slice(start, entry.shape[axis] if stop is None else stop)
            data = data[tuple(index)]
        part = np.ascontiguousarray(data)
        del data
        self.bytes_read += part.nbytes
        if entry.dtype == "BF16":
            return mx.array(part).view(mx.bfloat16)
        out = mx.array(part)
        return out if entry.dtype != "F64" else out.astype(mx.float32)
