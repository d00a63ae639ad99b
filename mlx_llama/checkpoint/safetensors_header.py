"""The one safetensors header reader: every entry is checked before a byte of tensor data is touched.

Rules (those of the safetensors format): an 8-byte little-endian length, a JSON object of at most 100 MB,
entries {dtype, shape, data_offsets} whose byte ranges exactly tile the data buffer (sorted, no gap, no
overlap, nothing past the end), optional `__metadata__` of strings.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import CheckpointError, shorten
from .dtypes import BY_CODE
from .lazy_tensor import MAX_NDIM, LazyTensor

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def _unique(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the name {shorten(duplicate)} appears twice")
    return out


def _parse(path: Path) -> tuple[dict, int, int]:
    """(header object, header length, file size)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: safetensors header of {n} bytes exceeds the {MAX_HEADER_BYTES} limit")
            if n > size - 8:
                raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes)")
            text = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(text, object_pairs_hook=_unique)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({shorten(str(exc), 120)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header must be a JSON object, got {type(header).__name__}")
    return header, n, size


def _entry(path: Path, name: str, info: object) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype name, shape, begin, end) of one header entry, or CheckpointError naming the tensor."""
    where = f"{path}: tensor {shorten(name)}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{where}: header entry must be an object with dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in BY_CODE:
        raise CheckpointError(f"{where}: unsupported dtype {shorten(dtype)}; expected one of {', '.join(BY_CODE)}")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape {shorten(shape)} must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
        raise CheckpointError(f"{where}: data_offsets {shorten(offsets)} must be two non-negative integers")
    begin, end = offsets
    numel = 1
    for d in shape:
        numel *= d
    if end < begin or end - begin != numel * BY_CODE[dtype].itemsize:
        raise CheckpointError(
            f"{where}: data_offsets {offsets} hold {end - begin} bytes, but {dtype}{shape} needs "
            f"{numel * BY_CODE[dtype].itemsize}"
        )
    return BY_CODE[dtype].name, tuple(shape), begin, end


def read_safetensors_header(path: str | Path) -> dict[str, LazyTensor]:
    """The tensors of a .safetensors file as lazy, memory-mapped views, in file order; fully validated."""
    path = Path(path)
    header, n, size = _parse(path)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: __metadata__ must be an object of strings")
    entries = sorted((_entry(path, name, info) + (name,) for name, info in header.items()), key=lambda e: e[2:4])
    buffer = size - 8 - n
    expected = 0
    tensors: dict[str, LazyTensor] = {}
    for dtype, shape, begin, end, name in entries:
        if begin != expected:
            what = "overlaps the previous tensor" if begin < expected else f"leaves a gap at byte {expected}"
            raise CheckpointError(f"{path}: tensor {shorten(name)} (data_offsets [{begin}, {end}]) {what}")
        if end > buffer:
            raise CheckpointError(f"{path}: tensor {shorten(name)} runs past the end of the file (truncated?)")
        expected = end
        tensors[name] = LazyTensor.contiguous(path, 8 + n + begin, shape, dtype)
    if expected != buffer:
        raise CheckpointError(f"{path}: {buffer - expected} bytes after the last tensor; not a safetensors file?")
    return tensors
