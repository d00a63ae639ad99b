"""Read PyTorch `.pth` / `.bin` checkpoints without PyTorch.

A torch zip checkpoint is a pickle (`<root>/data.pkl`) whose tensors point at raw storage blobs
(`<root>/data/<key>`, stored uncompressed). We unpickle it with an allow-list: only the tensor rebuild calls,
the storage classes and `collections.OrderedDict` resolve; any other global is refused before anything is
imported or called. Tensors come back lazy: each read maps only its own span of the file, honouring the
storage offset, the strides and the dtype, and unmaps it afterwards, so resident memory stays bounded.
"""

from __future__ import annotations

import collections
import mmap
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

# torch storage class name -> (our dtype name, numpy dtype holding the raw bytes; bf16 is kept as uint16)
_STORAGES = {
    "FloatStorage": ("float32", np.float32),
    "DoubleStorage": ("float64", np.float64),
    "HalfStorage": ("float16", np.float16),
    "BFloat16Storage": ("bfloat16", np.uint16),
    "LongStorage": ("int64", np.int64),
    "IntStorage": ("int32", np.int32),
    "ShortStorage": ("int16", np.int16),
    "CharStorage": ("int8", np.int8),
    "ByteStorage": ("uint8", np.uint8),
    "BoolStorage": ("bool", np.bool_),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.<X>Storage` inside the pickle; carries only the element type."""

    dtype: str
    np_dtype: type


@dataclass(frozen=True)
class _Storage:
    """One storage blob: where its bytes start in the archive file, and how many elements it holds."""

    path: Path
    data_offset: int
    numel: int
    kind: _StorageType


@dataclass(frozen=True)
class LazyTensor:
    """A tensor described by (storage, offset, shape, strides); bytes are read only by `numpy()`."""

    storage: _Storage
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @classmethod
    def contiguous(cls, path: Path, data_offset: int, shape: tuple[int, ...], dtype: str, np_dtype) -> LazyTensor:
        """A row-major tensor whose bytes start at `data_offset` in `path` (a safetensors entry, say)."""
        numel = int(np.prod(shape, dtype=np.int64))
        strides = tuple(int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape)))
        return cls(_Storage(Path(path), data_offset, numel, _StorageType(dtype, np_dtype)), 0, tuple(shape), strides)

    @property
    def dtype(self) -> str:
        """Our dtype name ('bfloat16', 'float16', ...)."""
        return self.storage.kind.dtype

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype of `numpy()`'s result (uint16 for bfloat16)."""
        return np.dtype(self.storage.kind.np_dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.np_dtype.itemsize

    def _span(self) -> int:
        """Elements of the storage this view touches, from its offset (0 for an empty tensor)."""
        if any(n == 0 for n in self.shape):
            return 0
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))

    def numpy(self, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the tensor out of the file into `out` if given: any array (a strided slice, say) with the same
        number of elements, filled in row-major order, so a merge can write each shard straight into place."""
        if out is None:
            out = np.empty(self.shape, dtype=self.np_dtype)
        elif out.size != int(np.prod(self.shape, dtype=np.int64)):
            raise ValueError(f"out has shape {out.shape}, tensor has {self.shape}")
        span = self._span()
        if span == 0:
            return out
        item = self.np_dtype.itemsize
        start = self.storage.data_offset + self.storage_offset * item
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        with open(self.storage.path, "rb") as f:
            mm = mmap.mmap(f.fileno(), start - aligned + span * item, offset=aligned, access=mmap.ACCESS_READ)
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


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor(_v2); requires_grad, hooks and metadata are ignored."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuild without a storage")
    tensor = LazyTensor(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))
    if tensor._span() and storage_offset + tensor._span() > storage.numel:
        raise pickle.UnpicklingError(
            f"tensor of shape {tensor.shape} at offset {storage_offset} overruns its storage of {storage.numel}"
        )
    return tensor


def _rebuild_parameter(data, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): a Parameter is just its tensor here."""
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; storages become `_Storage` records."""

    def __init__(self, file, path: Path, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._path, self._archive, self._root = path, archive, root

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            dtype, np_dtype = _STORAGES[name]
            return _StorageType(dtype, np_dtype)
        raise CheckpointError(
            f"{self._path}: the pickle asks for the global {module}.{name}, which a weights file never needs; "
            "refusing to load it (it could run arbitrary code)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unexpected persistent id {pid!r} in the pickle")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType):
            raise CheckpointError(f"{self._path}: storage {key} has an unsupported type {kind!r}")
        member = f"{self._root}/data/{key}"
        try:
            info = self._archive.getinfo(member)
        except KeyError:
            raise CheckpointError(f"{self._path}: storage blob {member} is missing (truncated file?)") from None
        need = int(numel) * np.dtype(kind.np_dtype).itemsize
        if info.file_size < need:
            raise CheckpointError(
                f"{self._path}: storage {member} holds {info.file_size} bytes, its tensors need {need} (truncated?)"
            )
        return _Storage(self._path, _data_offset(self._path, info), int(numel), kind)


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) member's bytes start in the file, from its local header."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"{path}: member {info.filename} is compressed; torch archives never are")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        size = f.seek(0, 2)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{path}: corrupt zip header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > size:
        raise CheckpointError(f"{path}: {info.filename} runs past the end of the file (truncated?)")
    return start


def _flatten(obj, prefix: str, out: dict[str, LazyTensor]) -> None:
    if isinstance(obj, LazyTensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)


def load_torch_file(path: str | Path) -> dict[str, LazyTensor]:
    """Return the tensors of a torch zip checkpoint as a flat name -> LazyTensor dict (nested dicts joined
    with dots); nothing but the pickle is read now."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable torch zip archive ({exc}); the file is truncated or corrupt, or it is the "
            "legacy pre-1.6 format (re-save it with a recent torch)"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"{path}: no data.pkl inside; not a torch checkpoint")
        root = pickles[0].split("/")[0]
        if f"{root}/byteorder" in archive.namelist():
            order = archive.read(f"{root}/byteorder").decode().strip()
            if order != "little":
                raise CheckpointError(f"{path}: saved on a {order}-endian machine; only little-endian is supported")
        try:
            with archive.open(pickles[0]) as f:
                obj = _RestrictedUnpickler(f, path, archive, root).load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, struct.error) as exc:
            raise CheckpointError(f"{path}: corrupt pickle ({exc})") from None
    tensors: dict[str, LazyTensor] = {}
    _flatten(obj, "", tensors)
    if not tensors:
        raise CheckpointError(f"{path}: contains no tensors")
    return tensors
