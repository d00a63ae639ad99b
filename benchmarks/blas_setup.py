"""What the Linux BLAS set-up buys: MLX float32 matmul speed per BLAS choice, and `import mlx_llama` time.

Each configuration runs in its own interpreter (which BLAS MLX uses is fixed when mlx.core loads) with a fresh
cache dir, so every verdict is probed anew. Prints a markdown table; numbers go to benchmarks/RESULTS.md.

    python benchmarks/blas_setup.py                       # reference BLAS, OpenBLAS, OpenBLAS core types
    python benchmarks/blas_setup.py --mkl /path/libmkl_rt.so.2 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in the child: set up as `import mlx_llama` does, then time GEMMs; prints one JSON line.
CHILD = """
import ctypes, json, sys, time
import mlx_llama
from mlx_llama import _backend
import mlx.core as mx, numpy as np
reps = int(sys.argv[1])
def gflops(m, k, n):
    a = mx.array(np.random.default_rng(0).standard_normal((m, k)).astype(np.float32))
    b = mx.array(np.random.default_rng(1).standard_normal((k, n)).astype(np.float32))
    mx.eval(a @ b)
    best = min(timed(lambda: mx.eval(a @ b)) for _ in range(reps))
    return 2 * m * k * n / best / 1e9
def timed(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t
core = getattr(ctypes.CDLL(None), "openblas_get_corename", None)
if core is not None:
    core.restype = ctypes.c_char_p
print(json.dumps({"library": _backend.loaded_library, "core": core().decode() if core else "",
                  "gemm_1024": gflops(1024, 1024, 1024), "prefill_128x2048x5632": gflops(128, 2048, 5632),
                  "decode_1x2048x5632": gflops(1, 2048, 5632)}))
"""


def run(env: dict[str, str], reps: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        full = {k: v for k, v in os.environ.items() if k not in ("MLX_LLAMA_BLAS", "OPENBLAS_CORETYPE")}
        full.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=cache, **env)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(reps)], env=full, capture_output=True, text=True, timeout=300
        )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_time(runs: int) -> tuple[float, float]:
    """(min wall s of `python -c 'import mlx_llama'` minus `python -c pass`, min in-process CPU s of the import)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def wall(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        return time.perf_counter() - t

    base = min(wall("pass") for _ in range(runs))
    full = min(wall("import mlx_llama") for _ in range(runs))
    code = "import time; t = time.process_time(); import mlx_llama; print(time.process_time() - t)"
    cpu = min(
        float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    )
    return full - base, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--mkl", help="a libmkl_rt.so to compare (e.g. from the `mkl` wheel)")
    p.add_argument("--cores", default="Prescott,Haswell,SkylakeX", help="OPENBLAS_CORETYPE values to compare")
    p.add_argument("--import-runs", type=int, default=5)
    args = p.parse_args()
    configs = {"reference BLAS (MLX_LLAMA_BLAS=0)": {"MLX_LLAMA_BLAS": "0"}, "OpenBLAS (default)": {}}
    for core in filter(None, args.cores.split(",")):
        configs[f"OpenBLAS, OPENBLAS_CORETYPE={core}"] = {"OPENBLAS_CORETYPE": core}
    if args.mkl:
        for layer in ("INTEL", "GNU", "SEQUENTIAL"):
            configs[f"MKL, MKL_THREADING_LAYER={layer}"] = {"MLX_LLAMA_BLAS": args.mkl, "MKL_THREADING_LAYER": layer}
    print("| configuration | library (core) | GEMM 1024^3 | prefill 128x2048x5632 | decode 1x2048x5632 |")
    print("|---|---|---|---|---|")
    for name, env in configs.items():
        r = run(env, args.reps)
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | |")
            continue
        lib = f"{Path(r['library']).name} ({r['core']})" if r["library"] else "bundled reference"
        print(
            f"| {name} | {lib} | {r['gemm_1024']:.1f} | {r['prefill_128x2048x5632']:.1f} | "
            f"{r['decode_1x2048x5632']:.1f} |",
            flush=True,
        )
    wall, cpu = import_time(args.import_runs)
    print(
        f"\n`import mlx_llama`: {wall:.3f} s wall over a bare interpreter (min of {args.import_runs}), "
        f"{cpu:.3f} s CPU in-process"
    )


if __name__ == "__main__":
    main()
