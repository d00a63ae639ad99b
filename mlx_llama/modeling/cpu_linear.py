"""Linear layers tuned for MLX's CPU backend; on Metal and CUDA they are plain `nn.Linear` / `nn.QuantizedLinear`.

Two costs of the CPU backend shape this (measured on 2 x86 cores for TinyLlama's 5632x2048 projection; the
figures are in benchmarks/RESULTS.md):

- float32 products go to the BLAS (`cblas_sgemm`), which reads a weight stored [out, in], as checkpoints store
  it, at 6.5 GB/s for one row, but the same weight stored input-major at 10-11 GB/s: 1.7x for a decode step,
  1.4x for 4 rows (a speculative check), 1.15x for a 128-token prompt (1.8x with the reference BLAS). So
  `use_input_major_layout` stores float32 weights that way once, at load. Shape, values, names and saved files
  are unchanged: the parameter is the transposed view of an [in, out] array.
- half-precision and quantized products run MLX's own kernels on one thread. Splitting the output rows over one
  CPU stream per core runs them side by side: 1.8-2.2x for bfloat16 and float16, 1.4x for 4 bits with float32
  scales. Every output element is computed by the same loop as before, so results are bit-identical.

`MLX_LLAMA_CPU_LAYOUT=0` turns both off.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import _backend
from ..checkpoint.lazy_tensor import LazyTensor
from ..checkpoint.safetensors_header import read_safetensors_header
from ..checkpoint.safetensors_io import checkpoint_files
from ..errors import CheckpointError

MAX_PARTS = 8  # at most this many CPU streams share one product
MIN_PART_ROWS = 128  # below this many output rows per part, splitting costs more than it saves
FLOATS = ("float32", "bfloat16", "float16")  # the checkpoint dtypes read_input_major widens
GEMM_MIN_ROWS = 16  # quantized inputs of this many rows or more take dequantize + GEMM (see CPUQuantizedLinear)

_streams: list[mx.Stream] = []


def enabled() -> bool:
    """True on MLX's CPU backend unless MLX_LLAMA_CPU_LAYOUT=0."""
    return mx.default_device().type == mx.cpu and os.environ.get("MLX_LLAMA_CPU_LAYOUT", "1") != "0"


def _parts(rows: int) -> list[mx.Stream]:
    if not _streams:
        _streams.extend(mx.new_stream(mx.cpu) for _ in range(min(os.cpu_count() or 1, MAX_PARTS)))
    return _streams[: max(1, min(len(_streams), rows // MIN_PART_ROWS))]


def split_rows(rows: int, product) -> mx.array | None:
    """`product(lo, hi, stream)` for row ranges covering `rows`, one CPU stream each, joined on the last axis;
    None when there is nothing to split (one part)."""
    streams = _parts(rows)
    if len(streams) < 2:
        return None
    bounds = [rows * i // len(streams) for i in range(len(streams) + 1)]
    return mx.concatenate([product(lo, hi, s) for lo, hi, s in zip(bounds, bounds[1:], streams)], axis=-1)


class Linear(nn.Linear):
    """nn.Linear whose half-precision products are split over the CPU cores (same weights, same names)."""

    def __call__(self, x: mx.array) -> mx.array:
        w = self["weight"]
        y = None
        if w.dtype != mx.float32 and enabled():
            y = split_rows(w.shape[0], lambda lo, hi, s: mx.matmul(x, w[lo:hi].T, stream=s))
        if y is None:
            return super().__call__(x)
        return y + self["bias"] if "bias" in self else y

    def to_quantized(
        self, group_size: int | None = None, bits: int | None = None, mode: str = "affine", quantize_input: bool = False
    ):
        """What `nn.quantize` calls: our quantized layer, which keeps the CPU paths."""
        if quantize_input:
            raise ValueError("quantize_input=True is not supported by mlx-llama's quantized layers")
        return CPUQuantizedLinear.from_linear(self, group_size, bits, mode=mode)


class CPUQuantizedLinear(nn.QuantizedLinear):
    """nn.QuantizedLinear with two CPU paths (same weights, same names).

    MLX's CPU `quantized_matmul` is quick for one row but scales badly with the number of rows: for a 2048x5632
    4-bit projection, 9 ms for 1 row but 1.15 s for 128 rows, while dequantizing and running a BLAS GEMM takes
    ~100 ms at any row count. So inputs of GEMM_MIN_ROWS rows or more (prompts) dequantize; fewer rows (decoding)
    keep the quantized kernel, split over the CPU cores."""

    def __call__(self, x: mx.array) -> mx.array:
        if not enabled():
            return super().__call__(x)
        if x.size // x.shape[-1] >= GEMM_MIN_ROWS:
            w = mx.dequantize(self["weight"], self["scales"], self.get("biases"), self.group_size, self.bits, self.mode)
            y = x @ w.astype(x.dtype).T
        else:
            y = split_rows(self["weight"].shape[0], lambda lo, hi, s: self._rows(x, lo, hi, s))
            if y is None:
                return super().__call__(x)
        return y + self["bias"] if "bias" in self else y

    def _rows(self, x: mx.array, lo: int, hi: int, stream: mx.Stream) -> mx.array:
        biases = self.get("biases")
        return mx.quantized_matmul(
            x,
            self["weight"][lo:hi],
            scales=self["scales"][lo:hi],
            biases=None if biases is None else biases[lo:hi],
            transpose=True,
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
            stream=stream,
        )


# ---- float32: input-major weights ----------------------------------------------------------------------------

_pool = ThreadPoolExecutor(2)


@functools.cache
def _omatcopy():
    """The loaded BLAS's out-of-place transpose (OpenBLAS has one), or None."""
    if not _backend.loaded_library:
        return None
    try:
        fn = ctypes.CDLL(_backend.loaded_library).cblas_somatcopy
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int] * 4 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    fn.restype = None
    return fn


def _new_input_major(out_dim: int, in_dim: int) -> tuple[mx.array, np.ndarray] | None:
    """A fresh [in, out] float32 MLX array and NumPy's writable view of its memory (MLX documents that writes
    through the view reach the array), or None if MLX gave no plain buffer."""
    dst = mx.zeros((in_dim, out_dim), mx.float32)
    mx.eval(dst)
    view = np.array(dst, copy=False)
    return (dst, view) if view.flags.writeable and view.flags.c_contiguous else None


def _transpose_into(src: np.ndarray, dst: np.ndarray) -> None:
    """dst[:] = src.T for a C-contiguous float32 `src` [n, k] and a [k, n] `dst` whose rows are contiguous.

    MLX's own strided copy runs at ~0.3 GB/s here; the BLAS's omatcopy on two threads at ~4 GB/s, NumPy's
    cache-sized tiles at ~0.7 GB/s (the fallback when the BLAS has none)."""
    n, k = src.shape
    copy = _omatcopy()
    if copy is None:
        tile = 256
        for i in range(0, n, tile):
            for j in range(0, k, tile):
                dst[j : j + tile, i : i + tile] = src[i : i + tile, j : j + tile].T
        return
    ldb = dst.strides[0] // dst.itemsize

    def rows(lo: int, hi: int) -> None:  # source rows lo:hi -> destination columns lo:hi
        copy(101, 112, hi - lo, k, 1.0, src[lo:].ctypes.data, k, dst[:, lo:].ctypes.data, ldb)

    half = n // 2
    list(_pool.map(lambda r: rows(*r), [(0, half), (half, n)] if half else [(0, n)]))


def _input_major(w: mx.array) -> mx.array:
    """The same logical [out, in] array, stored [in, out]: a transposed view of a fresh array."""
    made, src = _new_input_major(*w.shape), np.array(w, copy=False)
    if made is None or not src.flags.c_contiguous:
        return mx.contiguous(w.T).T
    _transpose_into(src, made[1])
    return made[0].T


def _as_float32(raw: np.ndarray, dtype: str, out: np.ndarray) -> np.ndarray:
    """Checkpoint elements (float32, or bfloat16 / float16 bits) as float32, exactly, in `out` unless float32."""
    if dtype == "float32":
        return raw
    if dtype == "bfloat16":  # the top half of a float32
        np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        out[:] = raw.view(np.float16)
    return out


def read_input_major(tensor: LazyTensor, loaded: mx.array, chunk_bytes: int = 8 << 20) -> mx.array:
    """A float32, bfloat16 or float16 [out, in] checkpoint tensor as float32, input-major. `loaded` is the same
    tensor as `mx.load` gave it, referenced nowhere else.

    A new array costs more here than the transpose (this VM faults fresh memory in at ~1 GB/s), so a buffer
    that had to exist anyway is reused: the loaded one (float32) or the float32 cast (half precision). It is
    viewed as [in, out] (a no-copy reshape) and overwritten with the transposed rows, re-read in small chunks
    from the file (in the page cache: it was just read) and widened exactly. Only on Linux, where MLX reads
    files into its own memory; elsewhere the transpose goes to a fresh array."""
    owned = loaded if loaded.dtype == mx.float32 else loaded.astype(mx.float32)
    if sys.platform != "linux":
        return _input_major(owned)
    out_dim, in_dim = tensor.shape
    dst = owned.reshape(in_dim, out_dim)
    mx.eval(dst)
    view = np.array(dst, copy=False)
    if (
        not (view.flags.writeable and view.flags.c_contiguous)
        or view.ctypes.data != np.array(owned, copy=False).ctypes.data
    ):
        return _input_major(owned)
    rows = max(1, chunk_bytes // (4 * in_dim))
    raw = np.empty(min(rows, out_dim) * in_dim, tensor.np_dtype)
    wide = np.empty(raw.size, np.float32) if tensor.dtype != "float32" else raw
    storage = tensor.storage
    with open(storage.path, "rb") as f:
        f.seek(storage.data_offset + raw.itemsize * tensor.storage_offset)
        for lo in range(0, out_dim, rows):
            n = min(rows, out_dim - lo)
            chunk = raw[: n * in_dim]
            if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                raise CheckpointError(f"{storage.path}: truncated while reading a tensor of shape {list(tensor.shape)}")
            rows_f32 = _as_float32(chunk, tensor.dtype, wide[: n * in_dim])
            _transpose_into(rows_f32.reshape(n, in_dim), view[:, lo : lo + n])
    return dst.T


def read_linear_weights(path: Path, weights: dict[str, mx.array], tied: bool) -> int:
    """Replace, in `weights` (a checkpoint's lazily loaded tensors, to be computed in float32), the Linear
    weights (and a tied embedding) by float32 input-major arrays, on the CPU backend; returns how many."""
    if not enabled():
        return 0
    suffixes = ("_proj.weight", "embed_tokens.weight") if tied else ("_proj.weight", "lm_head.weight")
    chosen = {}
    for file in checkpoint_files(path):
        for name, tensor in read_safetensors_header(file).items():
            if name in weights and name.endswith(suffixes) and len(tensor.shape) == 2 and tensor.dtype in FLOATS:
                chosen[name] = tensor
    mx.eval([weights[name] for name in chosen])  # all at once: MLX reads them in parallel (2x faster than in turn)
    for name, tensor in chosen.items():
        weights[name] = read_input_major(tensor, weights[name])
    return len(chosen)


def _is_input_major(w: mx.array) -> bool:
    return w.ndim == 2 and np.array(w, copy=False).strides[0] == w.itemsize


def use_input_major_layout(model: nn.Module) -> int:
    """Store the float32 weights of the model's Linear layers (and of a tied embedding, which is the output
    layer too) input-major, on the CPU backend; returns how many. A no-op elsewhere."""
    if not enabled():
        return 0
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    count = 0
    for _, module in model.named_modules():
        is_linear = isinstance(module, nn.Linear) or (tied and isinstance(module, nn.Embedding))
        w = module.get("weight") if is_linear and not isinstance(module, nn.QuantizedLinear) else None
        if w is None or w.dtype != mx.float32 or w.ndim != 2:
            continue
        mx.eval(w)
        if not _is_input_major(w):
            module.weight = _input_major(w)
            count += 1
    return count
