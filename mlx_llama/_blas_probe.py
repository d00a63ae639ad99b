"""Subprocess side of `_backend.probe`: is the preloaded BLAS the one MLX calls, and are its matmuls right?

Run as `LD_PRELOAD=LIB MLX_LLAMA_BLAS=0 python -m mlx_llama._blas_probe LIB`; prints one JSON verdict line. A
library that crashes on load or in a kernel kills only this process.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

import mlx.core as mx
import numpy as np

from ._backend import _library_of

# Matmul shapes (m, k, n, transpose a): odd sizes, a blocked size and a transposed operand.
SHAPES = ((3, 5, 7, False), (64, 48, 80, True), (256, 256, 256, False))


def verdict(path: str) -> dict:
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        return {"ok": False, "reason": f"cannot load: {exc}"}
    if not hasattr(lib, "cblas_sgemm"):
        return {"ok": False, "reason": "exports no cblas_sgemm (prefixed symbols or not a CBLAS library)"}
    found = _library_of(ctypes.CDLL(None).cblas_sgemm)
    if found != os.path.realpath(path):
        return {"ok": False, "reason": f"cblas_sgemm resolves to {found}, not to this library"}
    rng = np.random.default_rng(0)
    for m, k, n, trans in SHAPES:
        a = rng.standard_normal((k, m) if trans else (m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        got = np.array(mx.matmul(mx.array(a).T if trans else mx.array(a), mx.array(b)))
        want = (a.T if trans else a).astype(np.float64) @ b.astype(np.float64)
        err = float(np.abs(got - want).max() / np.sqrt(k))
        if not np.isfinite(err) or err > 1e-4:
            return {"ok": False, "reason": f"wrong matmul for {m}x{k}x{n}: scaled error {err:.3g}"}
    return {"ok": True, "reason": ""}


if __name__ == "__main__":
    print(json.dumps(verdict(sys.argv[1])))
