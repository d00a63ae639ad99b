"""Builders of malformed checkpoint files, written byte by byte (independent of the readers under test)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path


# ---- pickle opcodes (protocol 2), enough to write a torch state dict by hand --------------------------------
def s(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def i(n: int) -> bytes:
    return b"J" + struct.pack("<i", n) if -(2**31) <= n < 2**31 else b"\x8a\x08" + struct.pack("<q", n)


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def storage(key: str = "0", numel: int = 4, kind: str = "FloatStorage") -> bytes:
    """A persistent storage reference, as torch writes it."""
    return tup(s("storage"), glob("torch", kind), s(key), s("cpu"), i(numel)) + b"Q"


def tensor(storage_ops: bytes, offset: int = 0, size: tuple = (4,), stride: tuple = (1,)) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    empty_hooks = glob("collections", "OrderedDict") + b")R"
    args = storage_ops + i(offset) + tup(*map(i, size)) + tup(*map(i, stride)) + b"\x89" + empty_hooks
    return glob("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def state_dict(entries: dict[str, bytes]) -> bytes:
    body = b"".join(s(name) + value for name, value in entries.items())
    return b"\x80\x02}(" + body + b"u."


def build(target: bytes, state: dict[str, bytes]) -> bytes:
    """`target` then BUILD with a dict state: how a pickle rewrites an object it has made."""
    return target + b"}(" + b"".join(s(k) + v for k, v in state.items()) + b"ub"


def torch_zip(
    path: Path,
    pickle_bytes: bytes,
    blobs: dict[str, bytes] | None = None,
    *,
    byteorder: bytes = b"little",
    compress_pickle: bool = False,
) -> Path:
    """A torch-style zip archive: archive/data.pkl, archive/data/<key>, archive/byteorder."""
    blobs = {"0": b"\x00" * 16} if blobs is None else blobs
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "archive/data.pkl",
            pickle_bytes,
            compress_type=zipfile.ZIP_DEFLATED if compress_pickle else zipfile.ZIP_STORED,
        )
        z.writestr("archive/byteorder", byteorder)
        for key, data in blobs.items():
            z.writestr(f"archive/data/{key}", data)
    return path


# ---- safetensors ------------------------------------------------------------------------------------------
def safetensors(path: Path, header: object, data: bytes = b"", *, length: int | None = None) -> Path:
    """A safetensors file with `header` as given (any JSON value) and raw `data` after it."""
    blob = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)
    return path


def f32_entry(shape: list[int], begin: int) -> dict:
    n = 1
    for d in shape:
        n *= d
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + 4 * n]}
