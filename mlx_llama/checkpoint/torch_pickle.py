"""Read PyTorch `.pth` / `.bin` checkpoints without PyTorch.

A torch zip checkpoint is a pickle (`<root>/data.pkl`) whose tensors point at raw storage blobs
(`<root>/data/<key>`, stored uncompressed). We unpickle it with an allow-list: only the tensor rebuild calls,
the storage classes and `collections.OrderedDict` resolve; any other global is refused before anything is
imported or called. The pickle is scanned first (size, memo indices) so it cannot make the unpickler allocate
without bound, our records refuse BUILD, and every tensor is validated against its storage and file after
unpickling. Tensors come back lazy: each read maps only its own span of the file (see `lazy_tensor`).
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

from ..errors import CheckpointError, shorten
from .dtypes import BY_STORAGE, TensorDtype
from .lazy_tensor import LazyTensor, Storage, _Sealed

__all__ = ["LazyTensor", "load_torch_file"]

MAX_PICKLE_BYTES = 32 << 20  # a state dict's pickle is ~150 bytes per tensor; this allows 200k tensors
MAX_NESTING = 32  # dicts inside dicts; a state dict nests two or three deep


class _Call(_Sealed):
    """An allow-listed callable as the pickle sees it (a function's attributes cannot be set through BUILD)."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args):
        return self.fn(*args)


class _StorageClass(_Sealed):
    """Stands in for `torch.<X>Storage` inside the pickle; carries only the element type."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: TensorDtype):
        object.__setattr__(self, "dtype", dtype)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor(_v2); requires_grad, hooks and metadata are ignored."""
    if not isinstance(storage, Storage):
        raise CheckpointError("tensor rebuild without a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple)):
        raise CheckpointError(f"tensor size and stride must be tuples, got {shorten(size)} and {shorten(stride)}")
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): a Parameter is just its tensor here."""
    if not isinstance(data, LazyTensor):
        raise CheckpointError("parameter rebuild without a tensor")
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"): _Call(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Call(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Call(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Call(_rebuild_parameter),
    ("collections", "OrderedDict"): _Call(collections.OrderedDict),
}
_STORAGE_CLASSES = {name: _StorageClass(dtype) for name, dtype in BY_STORAGE.items()}
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; storages become `Storage` records."""

    def __init__(self, file, path: Path, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._path, self._archive, self._root = path, archive, root

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_CLASSES:
            return _STORAGE_CLASSES[name]
        raise CheckpointError(
            f"{self._path}: the pickle asks for the global {module[:60]}.{name[:60]}, which a "
            "weights file never needs; refusing to load it (it could run arbitrary code)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unexpected persistent id {shorten(pid)} in the pickle")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageClass):
            raise CheckpointError(f"{self._path}: storage {shorten(key)} has an unsupported type {shorten(kind)}")
        if not isinstance(key, str) or len(key) > 64 or type(numel) is not int or numel < 0:
            raise CheckpointError(f"{self._path}: malformed storage record {shorten(pid)}")
        member = f"{self._root}/data/{key}"
        try:
            info = self._archive.getinfo(member)
        except KeyError:
            raise CheckpointError(f"{self._path}: storage blob {member} is missing (truncated file?)") from None
        need = numel * kind.dtype.itemsize
        if info.file_size < need:
            raise CheckpointError(
                f"{self._path}: storage {member} holds {info.file_size} bytes, its tensors need {need} (truncated?)"
            )
        return Storage(self._path, _data_offset(self._path, info), numel, kind.dtype)


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) member's bytes start in the file, from its local header."""
    _stored(path, info)
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


def _stored(path: Path, info: zipfile.ZipInfo) -> None:
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"{path}: member {shorten(info.filename)} is compressed; torch archives never are")


def _scan(path: Path, data: bytes) -> None:
    """Refuse pickles that would make the unpickler allocate far more than their size (huge memo indices)."""
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name in _MEMO_OPS and arg > pos:
                raise CheckpointError(f"{path}: pickle memo index {arg} at byte {pos} is out of range; corrupt file")
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt pickle ({shorten(str(exc), 120)})") from None


def _read_member(path: Path, archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = archive.getinfo(name)
    _stored(path, info)
    if info.file_size > limit:
        raise CheckpointError(f"{path}: {name} is {info.file_size} bytes, more than the {limit} allowed")
    return archive.read(name)


def _flatten(path: Path, obj) -> dict[str, LazyTensor]:
    """name -> tensor, nested dicts joined with dots (iteratively, to a bounded depth)."""
    out: dict[str, LazyTensor] = {}
    todo = [("", obj, 0)]
    while todo:
        prefix, value, depth = todo.pop()
        if isinstance(value, LazyTensor):
            out[prefix] = value
        elif isinstance(value, dict):
            if depth >= MAX_NESTING:
                raise CheckpointError(f"{path}: dictionaries nested deeper than {MAX_NESTING} levels")
            for key, item in reversed(list(value.items())):
                todo.append((f"{prefix}.{key}" if prefix else str(key), item, depth + 1))
    return dict(reversed(list(out.items())))


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: not a readable torch zip archive ({shorten(str(exc), 120)}); the file is truncated or "
            "corrupt, or it is the legacy pre-1.6 format (re-save it with a recent torch)"
        ) from None


def _unpickle(path: Path, archive: zipfile.ZipFile):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pickles:
        raise CheckpointError(f"{path}: no data.pkl inside; not a torch checkpoint")
    root = pickles[0].split("/")[0]
    if f"{root}/byteorder" in names:
        raw = _read_member(path, archive, f"{root}/byteorder", 16).strip()
        if raw != b"little":
            raise CheckpointError(f"{path}: byteorder is {shorten(raw)}; only little-endian checkpoints are supported")
    data = _read_member(path, archive, pickles[0], MAX_PICKLE_BYTES)
    _scan(path, data)
    return _RestrictedUnpickler(io.BytesIO(data), path, archive, root).load()


def load_torch_file(path: str | Path) -> dict[str, LazyTensor]:
    """Return the tensors of a torch zip checkpoint as a flat name -> LazyTensor dict (nested dicts joined
    with dots); nothing but the pickle is read now."""
    path = Path(path)
    archive = _open(path)
    with archive:
        try:
            obj = _unpickle(path, archive)
        except CheckpointError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise CheckpointError(f"{path}: {exc}") from None
        except (
            pickle.UnpicklingError,
            EOFError,
            zipfile.BadZipFile,
            ValueError,
            TypeError,
            struct.error,
            AttributeError,
            IndexError,
            KeyError,
            OverflowError,
            MemoryError,
            RecursionError,
            OSError,
        ) as exc:
            raise CheckpointError(f"{path}: corrupt pickle ({type(exc).__name__}: {shorten(str(exc), 120)})") from None
    tensors = _flatten(path, obj)
    if not tensors:
        raise CheckpointError(f"{path}: contains no tensors")
    size = path.stat().st_size
    for name, tensor in tensors.items():
        tensor.validate(f"{path}: tensor {shorten(name)}", size)
    return tensors
