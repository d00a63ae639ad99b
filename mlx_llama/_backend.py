"""Platform set-up done once at import: on Linux, give the mlx[cpu] wheel an optimized BLAS.

Why: the mlx[cpu] wheel bundles a reference (netlib) BLAS, so float32 matmuls run 10-40x slower than they
could. libmlx.so binds `cblas_sgemm` (and LAPACK) when it is loaded; a BLAS loaded with RTLD_GLOBAL *before*
that wins the symbol lookup. Loading an unknown library can kill the process (an AVX-512-only build on an
older CPU), so each candidate is first tried in a short subprocess (`python -m mlx_llama._blas_probe`) and the
verdict is cached in the user's cache dir, keyed by library path + mtime + MLX build. Nothing else is written.
Measured trade-offs (which branches earn their lines) are in benchmarks/RESULTS.md.

Environment: MLX_LLAMA_BLAS=0 turns this off; MLX_LLAMA_BLAS=/path/to/lib.so tries that library only.
This module imports nothing heavy at import time: it must run before anything imports mlx.core.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

ENV_VAR = "MLX_LLAMA_BLAS"
_OFF = {"0", "off", "false", "no", "none"}
_AUTO = {"", "1", "on", "auto", "true", "yes"}
_PROBE_TIMEOUT_S = 60
_USER_SETTINGS = ("OPENBLAS_CORETYPE", "MKL_THREADING_LAYER")  # user overrides a verdict depends on
# Library names worth trying, best first. Only builds that export unprefixed CBLAS symbols are useful to MLX.
_NAMES = ("libopenblas.so.0", "libopenblasp.so.0", "libopenblaso.so.0", "libmkl_rt.so.3", "libmkl_rt.so.2")
_HINT_NONE = (
    "mlx_llama: MLX is using its slow reference BLAS. For fast float32 matmuls install OpenBLAS "
    f"(Debian/Ubuntu: sudo apt-get install libopenblas0-pthread) or set {ENV_VAR}=/path/to/libopenblas.so.0; "
    f"{ENV_VAR}=0 silences this."
)
_HINT_LATE = (
    "mlx_llama: mlx.core was imported before mlx_llama, so MLX keeps its slow reference BLAS; "
    "import mlx_llama first (or run with LD_PRELOAD=libopenblas.so.0)."
)

loaded_library: str | None = None  # the optimized library MLX's BLAS calls go to after setup(), if any
_done = False


def setup() -> str | None:
    """Load an optimized BLAS for MLX if it needs one; return its path (None: not needed, off, or none works).

    Never raises and stays silent unless nothing works, in which case one hint is printed once per cache.
    """
    global _done, loaded_library
    if _done:
        return loaded_library
    _done = True
    try:
        loaded_library = _setup()
    except Exception as exc:  # an import-time convenience must never break `import mlx_llama`
        print(f"mlx_llama: optimized BLAS set-up skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
        loaded_library = None
    return loaded_library


def _setup() -> str | None:
    choice = os.environ.get(ENV_VAR, "").strip()
    if choice.lower() in _OFF or sys.platform != "linux" or not reference_blas_bundled():
        return None
    already = global_blas()
    if already is not None:
        return already
    cache = _Cache(cache_path())
    if "mlx.core" in sys.modules:
        cache.hint_once("imported-late", _HINT_LATE)
        return None
    forced = choice.lower() not in _AUTO
    candidates = [Path(choice)] if forced else find_candidates()
    rejected = []
    for path in candidates:
        verdict = cache.verdict(path)
        if verdict["ok"]:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            return str(path)
        rejected.append(f"{path} ({verdict['reason']})")
    if forced:
        cache.hint_once(f"forced:{choice}", f"mlx_llama: {ENV_VAR}={choice} was not loaded: {rejected[0]}.")
    else:
        tried = f" Rejected: {'; '.join(rejected)}." if rejected else ""
        cache.hint_once("none-found", _HINT_NONE + tried)
    return None


def mlx_dir() -> Path | None:
    """The installed mlx package's directory, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("mlx")
    # `mlx` is a namespace package: any folder named mlx on sys.path joins it, so look for the real one.
    for location in (spec.submodule_search_locations or []) if spec else []:
        if any(Path(location).glob("core*.so")):
            return Path(location)
    return None


def reference_blas_bundled() -> bool:
    """True when MLX links the reference BLAS shipped in the mlx[cpu] wheel (`mlx_cpu.libs/libblas-*.so*`)."""
    root = mlx_dir()
    return root is not None and any((root.parent / "mlx_cpu.libs").glob("libblas*.so*"))


def mlx_build() -> str:
    """Identity of the installed MLX build: the version from its dist-info plus libmlx.so's size and mtime."""
    root = mlx_dir()
    if root is None:
        return "none"
    versions = sorted(p.name[4:-10] for p in root.parent.glob("mlx-*.dist-info"))
    lib = root / "lib" / "libmlx.so"
    stat = lib.stat() if lib.exists() else None
    return f"{','.join(versions) or '?'}:{stat.st_size if stat else 0}:{stat.st_mtime_ns if stat else 0}"


def global_blas() -> str | None:
    """Path of an optimized BLAS already in the global symbol scope (LD_PRELOAD, an earlier global load)."""
    scope = ctypes.CDLL(None)
    if not hasattr(scope, "cblas_sgemm"):
        return None
    path = _library_of(scope.cblas_sgemm)
    return path if path and any(tag in Path(path).name for tag in ("openblas", "mkl", "blis")) else None


def _library_of(func: object) -> str | None:
    """The shared object a resolved symbol lives in (dladdr)."""

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("fname", ctypes.c_char_p),
            ("fbase", ctypes.c_void_p),
            ("sname", ctypes.c_char_p),
            ("saddr", ctypes.c_void_p),
        ]

    info = DlInfo()
    dladdr = ctypes.CDLL(None).dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
    if not dladdr(ctypes.cast(func, ctypes.c_void_p), ctypes.byref(info)) or not info.fname:
        return None
    return os.path.realpath(info.fname.decode())


def search_dirs() -> list[Path]:
    """Where optimized BLAS libraries live: LD_LIBRARY_PATH, this environment's lib (`mkl`), the system."""
    import site

    machine = os.uname().machine
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    dirs += [Path(sys.prefix) / "lib", Path(site.getuserbase()) / "lib"]
    if os.environ.get("CONDA_PREFIX"):
        dirs.append(Path(os.environ["CONDA_PREFIX"]) / "lib")
    dirs += [Path(p) for p in ("/usr/local/lib", f"/usr/lib/{machine}-linux-gnu", "/usr/lib64", "/usr/lib")]
    return dirs


def find_candidates() -> list[Path]:
    """Existing candidate libraries, best first, one per real file."""
    import sysconfig

    paths = [folder / name for name in _NAMES for folder in search_dirs()]
    # The cmeel-openblas wheel is an AVX-512-only build: tried last; it passes the probe only on such CPUs.
    for key in ("platlib", "purelib"):
        paths.append(Path(sysconfig.get_paths()[key]) / "cmeel.prefix" / "lib" / "libopenblas.so.0")
    seen, found = set(), []
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen and path.is_file():
            seen.add(real)
            found.append(path)
    return found


def cache_path() -> Path:
    """`$XDG_CACHE_HOME/mlx_llama/blas.json`, else `~/.cache/mlx_llama/blas.json`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlx_llama" / "blas.json"


class _Cache:
    """Probe verdicts and hints already shown, in one small JSON file (best effort: unwritable is fine)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        self.verdicts: dict = data.get("verdicts", {}) if isinstance(data, dict) else {}
        self.hints: list = data.get("hints", []) if isinstance(data, dict) else []

    def verdict(self, lib: Path) -> dict:
        try:
            stat = lib.stat()
        except OSError as exc:
            return {"ok": False, "reason": f"cannot read: {exc.strerror}"}
        user_env = ",".join(f"{k}={os.environ.get(k, '')}" for k in _USER_SETTINGS)
        key = f"{os.path.realpath(lib)}|{stat.st_mtime_ns}|{stat.st_size}|mlx {mlx_build()}|{user_env}"
        if key in self.verdicts:
            return self.verdicts[key]
        verdict = probe(lib)
        if not verdict.pop("transient", False):  # a probe that could not even start says nothing about `lib`
            self.verdicts[key] = verdict
            self._save()
        return verdict

    def hint_once(self, key: str, message: str) -> None:
        if key in self.hints:
            return
        print(message, file=sys.stderr)
        self.hints.append(key)
        self._save()

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"verdicts": self.verdicts, "hints": self.hints}, indent=1))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home only costs a re-probe next time


def probe(lib: Path) -> dict:
    """`python -m mlx_llama._blas_probe` with `lib` preloaded; a crash or a hang is a 'no'."""
    import signal
    import subprocess  # only when probing: most imports find a cached verdict

    package_root = str(Path(__file__).resolve().parents[1])  # the child must import this very mlx_llama
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, ENV_VAR: "0", "LD_PRELOAD": str(lib), "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "mlx_llama._blas_probe", str(lib)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"probe hung for {_PROBE_TIMEOUT_S} s"}
    except OSError as exc:
        return {"ok": False, "reason": f"probe could not start: {exc}", "transient": True}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        how = f"exit {proc.returncode}"
        if proc.returncode < 0:
            how = f"killed by {signal.Signals(-proc.returncode).name}"
        err = proc.stderr.strip().splitlines()
        return {"ok": False, "reason": f"probe process died ({how}){': ' + err[-1][:200] if err else ''}"}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"ok": False, "reason": f"probe printed no verdict: {lines[-1][:200]}"}
