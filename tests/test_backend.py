"""Linux BLAS set-up: after `import mlx_llama` MLX's matmuls go to the optimized BLAS; bad candidates are safe.

Each check runs in a fresh interpreter, because which BLAS MLX uses is fixed when mlx.core is first loaded.
Speed is measured in benchmarks/blas_setup.py, never here.
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

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the BLAS set-up only acts on Linux"),
    pytest.mark.subprocess,
]

# `import mlx_llama` as a user does; prints the library chosen, whether it is mapped, where MLX's cblas_sgemm
# resolves, and whether a blocked, transposed float32 matmul agrees with numpy's float64 one.
IMPORT = """
import ctypes, json
import mlx_llama
from mlx_llama import _backend as b
import mlx.core as mx, numpy as np
names = {line.rsplit("/", 1)[-1].strip() for line in open("/proc/self/maps") if "/" in line}
a = np.random.default_rng(0).standard_normal((300, 257)).astype(np.float32)
err = np.abs(np.array(mx.array(a).T @ mx.array(a)) - a.T.astype(np.float64) @ a).max()
sgemm = getattr(ctypes.CDLL(None), "cblas_sgemm", None)  # None: only MLX's private reference BLAS has one
print(json.dumps({"path": b.loaded_library, "sgemm": sgemm and b._library_of(sgemm),
                  "mapped": any(n.startswith(("libopenblas", "libmkl_rt")) for n in names), "err": float(err)}))
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
    full_env = {**_clean_env(), "XDG_CACHE_HOME": str(cache), **env}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _clean_env() -> dict[str, str]:
    """This process's environment without the user's BLAS settings, so each check starts from the defaults."""
    return {k: v for k, v in os.environ.items() if k not in (_backend.ENV_VAR, *_backend._USER_SETTINGS)}


def cached_verdicts(cache: Path) -> list[dict]:
    return list(json.loads((cache / "mlx_llama" / "blas.json").read_text())["verdicts"].values())


needs_reference_blas = pytest.mark.skipif(
    not _backend.reference_blas_bundled(), reason="this MLX build does not bundle the reference BLAS"
)


@needs_reference_blas
def test_import_loads_an_optimized_blas_that_mlx_calls(tmp_path: Path) -> None:
    if not _backend.find_candidates():
        pytest.skip("no optimized BLAS installed (Debian/Ubuntu: apt-get install libopenblas0-pthread)")
    out, err = run(IMPORT, tmp_path)
    assert out["path"] is not None and out["mapped"], out
    assert out["sgemm"] == os.path.realpath(out["path"])  # MLX's cblas_sgemm is the loaded library's
    assert out["err"] < 1e-3 and err == ""
    assert cached_verdicts(tmp_path)[0]["ok"] is True


@needs_reference_blas
def test_env_zero_disables_it(tmp_path: Path) -> None:
    out, err = run(IMPORT, tmp_path, MLX_LLAMA_BLAS="0")
    assert out["path"] is None and not out["mapped"], out
    assert out["sgemm"] is None  # nothing global: MLX keeps the wheel's bundled reference BLAS
    assert out["err"] < 1e-3 and err == ""
    assert not (tmp_path / "mlx_llama" / "blas.json").exists()


@needs_reference_blas
def test_nothing_is_written_outside_the_cache_dir(tmp_path: Path) -> None:
    home, cache, work = tmp_path / "home", tmp_path / "cache", tmp_path / "work"
    for folder in (home, work):
        folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), "HOME": str(home), "XDG_CACHE_HOME": str(cache), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written in ([], ["cache/mlx_llama/blas.json"]), written


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
    src.write_text(
        "#include <stdlib.h>\nvoid cblas_sgemm(void) {}\n"
        "__attribute__((constructor)) static void boom(void) { abort(); }\n"
    )
    lib = tmp_path / "libcrash.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    verdict = _backend.probe(lib)
    assert verdict["ok"] is False and "SIGABRT" in verdict["reason"]


def test_library_without_cblas_is_rejected() -> None:
    libm = next(iter(Path("/").glob("usr/lib/*-linux-gnu/libm.so.6")), Path("/usr/lib64/libm.so.6"))
    if not libm.exists():
        pytest.skip("no libm.so.6 at a known path")
    verdict = _backend.probe(libm)
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
