"""Linux BLAS set-up: after `import mlx_llama` MLX matmuls at optimized-BLAS speed, bad candidates are safe.

Each check runs in a fresh interpreter, because which BLAS MLX uses is fixed when mlx.core is first loaded.
Speed is judged as a ratio against numpy's own (optimized) matmul in the same process, never as a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_llama import _backend

ROOT = Path(__file__).resolve().parents[1]
BACKEND = ROOT / "mlx_llama" / "_backend.py"
# MLX/numpy float32 GEMM (n=1024) measured on a 2-core x86 machine: 0.014-0.08 with MLX's reference BLAS,
# 0.5-1.7 with Debian's OpenBLAS (numpy's own OpenBLAS ran 55-290 GFLOP/s there).
MIN_RATIO = 0.2

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the BLAS set-up only acts on Linux")

# Prints the library setup() chose, whether it is mapped into the process, and MLX/numpy f32 GEMM GFLOP/s.
SPEED = """
import json, sys, time
import mlx_llama._backend as b
path = b.setup()
import mlx.core as mx, numpy as np
def best(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return 2 * N**3 / min(times) / 1e9
N = 1024
a = np.random.default_rng(0).standard_normal((N, N)).astype(np.float32)
x = mx.array(a)
np_gf = best(lambda: a @ a, REPS)  # first: OpenBLAS threads spin a while after a call, slowing what follows
mx_gf = best(lambda: mx.eval(x @ x), REPS)
names = {line.rsplit("/", 1)[-1].strip() for line in open("/proc/self/maps") if "/" in line}
mapped = any(n.startswith(("libopenblas", "libmkl_rt")) for n in names)  # numpy's is libscipy_openblas64_
print(json.dumps({"path": path, "mapped": mapped, "ratio": mx_gf / np_gf,
                  "mlx_gflops": mx_gf, "numpy_gflops": np_gf}))
"""

# Loads _backend.py by path (no package import), optionally hides every candidate, runs setup().
BY_PATH = """
import importlib.util as u, json, sys
s = u.spec_from_file_location("b", sys.argv[1]); b = u.module_from_spec(s); s.loader.exec_module(b)
if sys.argv[2] == "late":
    import mlx.core
if sys.argv[2] == "hide":
    b.find_candidates = lambda: []
path = b.setup()
names = {line.rsplit("/", 1)[-1].strip() for line in open("/proc/self/maps") if "/" in line}
print(json.dumps({"path": path, "mapped": any(n.startswith(("libopenblas", "libmkl_rt")) for n in names)}))
"""


def run(code: str, cache: Path, args: tuple[str, ...] = (), **env: str) -> tuple[dict, str]:
    """Run `code` in a fresh interpreter with its own BLAS cache dir; return (last JSON line, stderr)."""
    # Without the settings this test process's own `import mlx_llama` may have exported (OPENBLAS_CORETYPE).
    drop = (_backend.ENV_VAR, *_backend._USER_SETTINGS)
    full_env = {k: v for k, v in os.environ.items() if k not in drop}
    full_env.update(XDG_CACHE_HOME=str(cache), **env)
    proc = subprocess.run([sys.executable, "-c", code, *args], env=full_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def cached_verdicts(cache: Path) -> list[dict]:
    return list(json.loads((cache / "mlx_llama" / "blas.json").read_text())["verdicts"].values())


needs_reference_blas = pytest.mark.skipif(
    not _backend.reference_blas_bundled(), reason="this MLX build does not bundle the reference BLAS")


@needs_reference_blas
def test_mlx_matmul_reaches_optimized_blas_speed(tmp_path: Path) -> None:
    if not _backend.find_candidates():
        pytest.skip("no optimized BLAS installed (Debian/Ubuntu: apt-get install libopenblas0-pthread)")
    out, _ = run(SPEED.replace("REPS", "5"), tmp_path)
    assert out["path"] is not None and out["mapped"], out
    assert out["ratio"] >= MIN_RATIO, out
    print(out)
    assert cached_verdicts(tmp_path)[0]["ok"] is True


@needs_reference_blas
def test_env_zero_disables_it(tmp_path: Path) -> None:
    out, err = run(SPEED.replace("REPS", "1"), tmp_path, MLX_LLAMA_BLAS="0")
    assert out["path"] is None and not out["mapped"], out
    assert out["ratio"] < MIN_RATIO, out  # the threshold above does tell the two BLAS apart
    print(out)
    assert err == ""
    assert not (tmp_path / "mlx_llama" / "blas.json").exists()


@needs_reference_blas
def test_broken_candidate_is_rejected_once_and_quietly(tmp_path: Path) -> None:
    bogus = tmp_path / "libopenblas.so.0"
    bogus.write_text("not an ELF file")
    out, err = run(BY_PATH, tmp_path, (str(BACKEND), "keep"), MLX_LLAMA_BLAS=str(bogus))
    assert out == {"path": None, "mapped": False}
    assert "was not loaded" in err and "cannot load" in err and str(bogus) in err
    [verdict] = cached_verdicts(tmp_path)
    assert verdict["ok"] is False
    out, err = run(BY_PATH, tmp_path, (str(BACKEND), "keep"), MLX_LLAMA_BLAS=str(bogus))
    assert out["path"] is None and err == ""  # cached verdict, hint already shown


@needs_reference_blas
@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build a crashing library")
def test_candidate_that_kills_its_process_does_not_crash_ours(tmp_path: Path) -> None:
    src = tmp_path / "crash.c"
    src.write_text("#include <stdlib.h>\nvoid cblas_sgemm(void) {}\n"
                   "__attribute__((constructor)) static void boom(void) { abort(); }\n")
    lib = tmp_path / "libcrash.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    verdict = _backend.probe(lib, {})
    assert verdict["ok"] is False and "SIGABRT" in verdict["reason"]


def test_library_without_cblas_is_rejected() -> None:
    libm = next(iter(Path("/").glob("usr/lib/*-linux-gnu/libm.so.6")), Path("/usr/lib64/libm.so.6"))
    if not libm.exists():
        pytest.skip("no libm.so.6 at a known path")
    verdict = _backend.probe(libm, {})
    assert verdict["ok"] is False and verdict["reason"].startswith("exports no cblas_sgemm")


@needs_reference_blas
def test_no_candidate_prints_one_hint_per_cache(tmp_path: Path) -> None:
    out, err = run(BY_PATH, tmp_path, (str(BACKEND), "hide"))
    assert out == {"path": None, "mapped": False}
    assert "apt-get install libopenblas0-pthread" in err and err.count("\n") == 1
    _, err = run(BY_PATH, tmp_path, (str(BACKEND), "hide"))
    assert err == ""


@needs_reference_blas
def test_mlx_imported_first_gets_a_hint_not_a_useless_load(tmp_path: Path) -> None:
    out, err = run(BY_PATH, tmp_path, (str(BACKEND), "late"))
    assert out == {"path": None, "mapped": False}
    assert "import mlx_llama first" in err


@needs_reference_blas
def test_preloaded_blas_is_recognised(tmp_path: Path) -> None:
    candidates = _backend.find_candidates()
    if not candidates:
        pytest.skip("no optimized BLAS installed")
    out, err = run(BY_PATH, tmp_path, (str(BACKEND), "late"), LD_PRELOAD=str(candidates[0]))
    assert out == {"path": os.path.realpath(candidates[0]), "mapped": True} and err == ""


def test_isa_check_for_single_target_builds() -> None:
    avx2_cpu = {"sse2", "avx", "avx2", "fma"}
    avx512_cpu = avx2_cpu | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    cmeel = "OpenBLAS 0.3.31 NO_AFFINITY SKYLAKEX MAX_THREADS=4"  # the cmeel-openblas wheel's config string
    assert _backend.isa_problem(cmeel, avx2_cpu) == (
        "built for SKYLAKEX only; this CPU lacks avx512bw, avx512cd, avx512dq, avx512f, avx512vl")
    assert _backend.isa_problem(cmeel, avx512_cpu) is None
    debian = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64"
    assert _backend.isa_problem(debian, {"sse2"}) is None
    # A DYNAMIC_ARCH build that did not recognise the CPU gets the best kernels the CPU flags allow.
    assert _backend.better_core("Prescott", debian, avx512_cpu) == "SkylakeX"
    assert _backend.better_core("Prescott", debian, avx2_cpu) == "Haswell"
    assert _backend.better_core("Haswell", debian, avx512_cpu) is None
    assert _backend.better_core("SKYLAKEX", cmeel, avx512_cpu) is None
