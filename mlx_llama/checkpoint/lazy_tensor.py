"""A tensor described by (file span, offset, shape, strides, dtype) whose bytes are read only on demand.

Both readers (safetensors headers, torch pickles) produce these, and `validate` is the one check that a
tensor stays inside its storage, and its storage inside its file, before any byte is mapped. The records
refuse pickle's BUILD (`__setstate__`), so a hostile pickle cannot rewrite a storage's path or sizes.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .dtypes import BY_NAME, TensorDtype

MAX_NDIM = 8


class _Sealed:
    """Objects the unpickler hands to a pickle: their state can never be set by the pickle (BUILD)."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        raise CheckpointError("the pickle tries to modify a storage or tensor record (BUILD); refusing it")


@dataclass(frozen=True, eq=False)
class Storage(_Sealed):
    """One storage blob: the file, where its bytes start, how many elements it holds and their type."""

    path: Path
    data_offset: int
    numel: int
    dtype: TensorDtype


@dataclass(frozen=True, eq=False)
class LazyTensor(_Sealed):
    """A strided view of a storage; bytes are read only by `numpy()`."""

    storage: Storage
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @classmethod
    def contiguous(cls, path: Path, data_offset: int, shape: tuple[int, ...], dtype: str) -> LazyTensor:
        """A row-major tensor whose bytes start at `data_offset` in `path` (a safetensors entry, say)."""
        numel = int(np.prod(shape, dtype=object))
        strides = tuple(int(np.prod(shape[i + 1 :], dtype=object)) for i in range(len(shape)))
        return cls(Storage(Path(path), data_offset, numel, BY_NAME[dtype]), 0, tuple(shape), strides)

    @property
    def dtype(self) -> str:
        """Our dtype name ('bfloat16', 'float16', ...)."""
        return self.storage.dtype.name

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype of `numpy()`'s result (uint16 for bfloat16)."""
        return np.dtype(self.storage.dtype.raw)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=object))

    @property
    def nbytes(self) -> int:
        return self.numel * self.np_dtype.itemsize

    def _span(self) -> int:
        """Elements of the storage this view touches, from its offset (0 for an empty tensor)."""
        if any(n == 0 for n in self.shape):
            return 0
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))

    def validate(self, what: str, file_size: int | None = None) -> None:
        """Raise CheckpointError (naming `what`) unless this view is well formed and inside its storage/file."""
        st = self.storage
        ints = (st.data_offset, st.numel, self.storage_offset, *self.shape, *self.stride)
        if not all(type(v) is int for v in ints):
            raise CheckpointError(f"{what}: sizes, offsets and strides must be integers")
        if len(self.shape) > MAX_NDIM or len(self.stride) != len(self.shape):
            raise CheckpointError(f"{what}: {len(self.shape)} dimensions with {len(self.stride)} strides")
        if min(ints) < 0:
            raise CheckpointError(f"{what}: negative size, offset or stride ({list(self.shape)}, {list(self.stride)})")
        if not _non_overlapping(self.shape, self.stride):
            raise CheckpointError(
                f"{what}: strides {list(self.stride)} make elements of shape {list(self.shape)} overlap"
            )
        span = self._span()
        if span and self.storage_offset + span > st.numel:
            raise CheckpointError(
                f"{what}: shape {list(self.shape)} at offset {self.storage_offset} overruns its storage of "
                f"{st.numel} elements"
            )
        size = os.path.getsize(st.path) if file_size is None else file_size
        if st.data_offset + st.numel * st.dtype.itemsize > size:
            raise CheckpointError(f"{what}: storage runs past the end of {st.path.name} (truncated?)")

    def numpy(self, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the tensor out of the file into `out` if given: any array (a strided slice, say) with the same
        number of elements, filled in row-major order, so a merge can write each shard straight into place."""
        if out is None:
            out = np.empty(self.shape, dtype=self.np_dtype)
        elif out.size != self.numel:
            raise ValueError(f"out has shape {out.shape}, tensor has {self.shape}")
        span = self._span()
        if span == 0:
            return out
        item = self.np_dtype.itemsize
        start = self.storage.data_offset + self.storage_offset * item
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            with open(self.storage.path, "rb") as f:
                mm = mmap.mmap(f.fileno(), start - aligned + span * item, offset=aligned, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.storage.path}: cannot read tensor bytes ({exc}); file changed?") from None
        try:
            flat = np.frombuffer(mm, dtype=self.np_dtype, count=span, offset=start - aligned)
            view = np.lib.stride_tricks.as_strided(
                flat, shape=self.shape, strides=tuple(s * item for s in self.stride), writeable=False
            )
            out[...] = view.reshape(out.shape)
            del flat, view
        finally:
            mm.close()
        return out


def _non_overlapping(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """No two indices address the same element: sorted by stride, each dim steps over all smaller ones."""
    reach = 0  # largest offset reachable with the dimensions seen so far
    for n, s in sorted(((n, s) for n, s in zip(shape, stride, strict=True) if n > 1), key=lambda d: d[1]):
        if s <= reach:
            return False
        reach += (n - 1) * s
    return True
