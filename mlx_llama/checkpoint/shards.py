"""The one shard planner, and the streaming safetensors writer the converter uses.

Shards are cut by size in tensor order, as Transformers does; `ShardWriter` knows every header up front, so
each tensor's bytes go straight to their place in the file, in as many pieces as the caller likes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import ConversionError
from .dtypes import BY_NAME
from .index import write_index

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def plan_shards(sizes: Sequence[int], max_bytes: int) -> list[list[int]]:
    """Indices of `sizes` grouped into consecutive shards of at most `max_bytes` (a bigger item stands alone)."""
    shards: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if shards[-1] and total + size > max_bytes:
            shards.append([])
            total = 0
        shards[-1].append(i)
        total += size
    return shards


def shard_names(n: int) -> list[str]:
    """`model.safetensors`, or Transformers' `model-0000i-of-0000n.safetensors` names."""
    return [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


@dataclass
class Entry:
    """One tensor in an output shard."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    shard: int = 0
    offset: int = 0
    written: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * BY_NAME[self.dtype].itemsize


class ShardWriter:
    """Writes planned safetensors shards whose headers are known up front; bytes land at their offsets."""

    def __init__(self, directory: Path, entries: list[Entry], max_shard_size: int):
        shards = plan_shards([e.nbytes for e in entries], max_shard_size)
        self.names = shard_names(len(shards))
        self.files, self.data_start = [], []
        self.entries, self.directory = entries, directory
        for s, (name, members) in enumerate(zip(self.names, shards, strict=True)):
            header: dict = {"__metadata__": {"format": "mlx"}}
            offset = 0
            for e in (entries[i] for i in members):
                e.shard, e.offset = s, offset
                header[e.name] = {
                    "dtype": BY_NAME[e.dtype].code,
                    "shape": list(e.shape),
                    "data_offsets": [offset, offset + e.nbytes],
                }
                offset += e.nbytes
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)
            f = open(directory / name, "wb")
            self.files.append(f)
            f.write(struct.pack("<Q", len(blob)) + blob)
            self.data_start.append(8 + len(blob))

    def write(self, entry: Entry, at: int, array: np.ndarray | mx.array) -> None:
        """Write `array`'s bytes at byte `at` within `entry`'s data."""
        if isinstance(array, mx.array) and array.dtype == mx.bfloat16:
            array = array.view(mx.uint16)
        data = memoryview(np.ascontiguousarray(np.asarray(array))).cast("B")
        if at + len(data) > entry.nbytes:
            raise ConversionError(f"internal: {entry.name} overflows its planned size")
        f = self.files[entry.shard]
        f.seek(self.data_start[entry.shard] + entry.offset + at)
        f.write(data)
        entry.written += len(data)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def finish(self) -> None:
        """After a complete run: check every byte was written and add the index for several shards."""
        for e in self.entries:
            if e.written != e.nbytes:
                raise ConversionError(f"internal: {e.name}: wrote {e.written} of {e.nbytes} bytes")
        if len(self.names) > 1:
            weight_map = {e.name: self.names[e.shard] for e in self.entries}
            write_index(self.directory / INDEX_FILE, weight_map, sum(e.nbytes for e in self.entries))
