"""Read only part of a safetensors checkpoint: one rank of a parallel model maps just its own byte ranges.

`mx.load` maps whole tensors: slicing a lazily loaded array still reads all of it when evaluated. Here the
headers are read (and validated) by the one header reader, `safetensors_header.py`, and a slice along one axis
becomes a strided view of the file, copied out of a memory map: a rank touches only the pages of its part
(axis 0: one contiguous range; axis 1: a range in every row).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from ..errors import CheckpointError
from .lazy_tensor import LazyTensor
from .safetensors_header import read_safetensors_header


class SlicedReader:
    """The tensors of one or more safetensors files, read whole or as the k-th of n equal parts of one axis."""

    def __init__(self, files: list[Path]) -> None:
        self.entries: dict[str, LazyTensor] = {}
        self.files: dict[str, Path] = {}
        for file in files:
            tensors = read_safetensors_header(file)
            self.entries.update(tensors)
            self.files.update(dict.fromkeys(tensors, Path(file)))
        self.bytes_read = 0  # what `read` copied out, to check that a rank reads only its share

    def keys(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> LazyTensor:
        if name not in self.entries:
            raise CheckpointError(f"tensor {name} is missing from the checkpoint")
        return self.entries[name]

    def part_range(self, name: str, axis: int, part: int, parts: int) -> tuple[int, int]:
        """[start, stop) of part `part` of `parts` equal parts of `axis`; an error naming the tensor if uneven."""
        shape = self.entry(name).shape
        if axis >= len(shape) or shape[axis] % parts:
            raise CheckpointError(
                f"{self.files[name]}: tensor {name} of shape {list(shape)} cannot be split "
                f"evenly along axis {axis} across {parts} ranks"
            )
        step = shape[axis] // parts
        return part * step, (part + 1) * step

    def read(self, name: str, axis: int | None = None, start: int = 0, stop: int | None = None) -> mx.array:
        """The tensor, or its [start:stop) slice along `axis`, as an mx.array (only those bytes are read)."""
        tensor = self.entry(name)
        if axis is not None:
            stop = tensor.shape[axis] if stop is None else stop
            if not 0 <= start <= stop <= tensor.shape[axis]:
                raise CheckpointError(
                    f"{self.files[name]}: tensor {name}: slice [{start}:{stop}] of axis {axis} "
                    f"is outside its shape {list(tensor.shape)}"
                )
            shape = (*tensor.shape[:axis], stop - start, *tensor.shape[axis + 1 :])
            offset = tensor.storage_offset + start * tensor.stride[axis]
            tensor = LazyTensor(tensor.storage, offset, shape, tensor.stride)
        part = tensor.numpy()
        self.bytes_read += part.nbytes
        out = mx.array(part)
        return out.view(mx.bfloat16) if tensor.dtype == "bfloat16" else out
