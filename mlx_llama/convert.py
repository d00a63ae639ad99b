"""Convert Meta or Transformers LLaMA checkpoints to MLX safetensors: detect the layout, stream the tensors
one at a time, cast or quantize them, and write the result atomically.

Memory stays bounded by one merged source tensor plus a small working chunk: the output plan (names, shapes,
dtypes, byte offsets) is known before any weight is read, so every shard's header is written first and each
tensor's bytes go straight to their place in the file, in row chunks. The sources, the dtype table, the shard
planner and the index live in `checkpoint/`; this module keeps planning, jobs, the atomic output and the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from .checkpoint import hub
from .checkpoint.dtypes import BY_NAME, FLOATS
from .checkpoint.layers import check_layer_count
from .checkpoint.meta import VERSIONS
from .checkpoint.safetensors_io import checkpoint_files, parse_size, read_safetensors_header
from .checkpoint.shards import Entry, ShardWriter
from .checkpoint.sources import Source, open_source
from .checkpoint.spec import TensorSpec
from .config import QUANT_BITS, QUANT_GROUP_SIZES
from .convert_aliases import add_seed_flags, apply_seed_flags
from .convert_tokenizer import check_tokenizer
from .dtypes import dtype_name, parse_dtype
from .errors import ConfigError, ConversionError, MlxLlamaError, shorten

_NOT_QUANTIZED = {"score", "qa_outputs"}  # tiny classification heads stay in float
_CHUNK_BYTES = 16 << 20  # per cast/quantize step: a few of these live at once, on top of the tensor
Q_BITS = tuple(b for b in QUANT_BITS if b != 5)
Q_GROUP_SIZES = QUANT_GROUP_SIZES
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


@dataclass
class _Job:
    """How one source tensor becomes output tensors: 'copy', 'cast', 'quantize' or 'dequantize'."""

    source: str
    kind: str
    dtype: str
    entries: list[Entry]
    group_size: int = 0
    bits: int = 0
    extra_sources: list[str] = field(default_factory=list)  # scales, biases when dequantizing


@dataclass(frozen=True)
class _Options:
    """The validated conversion settings."""

    dtype: str
    quantize: tuple[int, int] | None  # (group size, bits)
    dequantize: bool
    shard_size: int
    allow_nonfinite: bool

    @classmethod
    def check(cls, dtype, quantize, q_bits, q_group_size, dequantize, max_shard_size, allow_nonfinite) -> _Options:
        target = dtype_name(parse_dtype(dtype, "--dtype"))
        if target not in ("float16", "bfloat16", "float32"):
            raise ConfigError(f"--dtype: {target} is not a float type; expected float16, bfloat16 or float32")
        if quantize and dequantize:
            raise ConfigError("--quantize and --dequantize are mutually exclusive")
        if quantize and (q_bits not in Q_BITS or q_group_size not in Q_GROUP_SIZES):
            raise ConfigError(f"--q-bits must be one of {Q_BITS} and --q-group-size one of {Q_GROUP_SIZES}")
        try:
            shard_size = parse_size(max_shard_size)
        except ConfigError as exc:
            raise ConfigError(f"--max-shard-size: {exc}") from None
        q = (q_group_size, q_bits) if quantize else None
        return cls(target, q, bool(dequantize), shard_size, bool(allow_nonfinite))


# ---------------------------------------------------------------------------------------------------------
# Planning and the per-tensor jobs
# ---------------------------------------------------------------------------------------------------------
def _quantizable(name: str, shape: tuple[int, ...], group_size: int) -> bool:
    """Linear and embedding weights (2D `.weight`), not norms nor the classification heads."""
    module = name.rsplit(".", 2)[-2] if name.count(".") else ""
    return len(shape) == 2 and name.endswith(".weight") and module not in _NOT_QUANTIZED and shape[-1] % group_size == 0


def _dequantize_job(spec: TensorSpec, names: set[str], dtype: str, dequant: dict) -> _Job:
    base = spec.name.rsplit(".", 1)[0]
    override = dequant.get(base)
    settings = override if isinstance(override, dict) else dequant
    if settings.get("mode", "affine") != "affine" or f"{base}.biases" not in names:
        raise ConversionError(f"{base}: only affine quantization (scales and biases) can be dequantized")
    group, bits = settings.get("group_size"), settings.get("bits")
    if group not in QUANT_GROUP_SIZES or bits not in QUANT_BITS:
        raise ConversionError(f"{base}: quantization group_size {shorten(group)} / bits {shorten(bits)} unsupported")
    shape = (*spec.shape[:-1], spec.shape[-1] * 32 // bits)
    extra = [f"{base}.scales", f"{base}.biases"]
    return _Job(spec.name, "dequantize", dtype, [Entry(spec.name, shape, dtype)], group, bits, extra)


def _plan(specs: list[TensorSpec], dtype: str, quantize: tuple[int, int] | None, dequant: dict | None) -> list[_Job]:
    """Decide, before reading anything, what each source tensor becomes and the exact output shapes."""
    names = {s.name for s in specs}
    packed = set()
    if dequant is not None:
        packed = {n.removesuffix(".scales") for n in names if n.endswith(".scales") and f"{n[:-7]}.weight" in names}
    jobs = []
    for spec in specs:
        out = dtype if spec.dtype in FLOATS else spec.dtype
        base = spec.name.rsplit(".", 1)[0]
        if base in packed and spec.name != f"{base}.weight":
            continue  # scales and biases are consumed by their weight's dequantize job
        if base in packed:
            jobs.append(_dequantize_job(spec, names, dtype, dequant))
        elif quantize is not None and spec.dtype in FLOATS and _quantizable(spec.name, spec.shape, quantize[0]):
            group, bits = quantize
            rows, cols = spec.shape
            entries = [
                Entry(spec.name, (rows, cols * bits // 32), "uint32"),
                Entry(f"{base}.scales", (rows, cols // group), out),
                Entry(f"{base}.biases", (rows, cols // group), out),
            ]
            jobs.append(_Job(spec.name, "quantize", out, entries, group, bits))
        else:
            if spec.dtype not in FLOATS:
                raise ConversionError(f"{spec.name}: dtype {spec.dtype}, but model weights are floating point")
            kind = "cast" if out != spec.dtype else "copy"
            jobs.append(_Job(spec.name, kind, out, [Entry(spec.name, spec.shape, out)]))
    return jobs


def _to_mx(raw: np.ndarray, dtype: str) -> mx.array:
    array = mx.array(raw)
    return array.view(mx.bfloat16) if dtype == "bfloat16" else array


_F16_OVERFLOW = 65520.0  # the smallest magnitude that rounds to infinity in float16


def _widen(raw: np.ndarray, src: str) -> np.ndarray:
    """float32 (or float64) values of a raw float chunk; the widening from bfloat16 is exact."""
    if src == "bfloat16":
        wide = raw.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    return raw if src == "float64" else raw.astype(np.float32, copy=False)


def _check_finite(wide: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(wide)
    if bad.any():
        nan = int(np.isnan(wide).sum())
        raise ConversionError(
            f"{name}: {nan} NaN and {int(bad.sum()) - nan} infinite values in the source weights; the checkpoint "
            "is damaged (pass --allow-nonfinite to convert it anyway)"
        )


def _cast_chunk(
    raw: np.ndarray, src: str, target: str, name: str, allow_nonfinite: bool = False
) -> np.ndarray | mx.array:
    """Cast a raw chunk with round-to-nearest-even, as torch does; NaN/Inf and float16 overflow are errors.

    numpy does the float16/float32 casts (several times faster than MLX's CPU kernels on half types).
    """
    wide = _widen(raw, src)
    if not allow_nonfinite:
        _check_finite(wide, name)
    if target == "bfloat16":
        return mx.array(wide.astype(np.float32, copy=False)).astype(mx.bfloat16)
    if target == "float16" and wide.size:
        finite = np.abs(wide[np.isfinite(wide)]) if allow_nonfinite else np.abs(wide)
        peak = float(finite.max()) if finite.size else 0.0  # a NaN can no longer hide the peak
        if peak >= _F16_OVERFLOW:
            with np.errstate(over="ignore"):
                overflow = (np.isinf(wide.astype(np.float16)) & np.isfinite(wide)).any()
            if overflow:
                raise ConversionError(
                    f"{name}: values up to {peak:.4g} overflow float16 (max 65504); convert with --dtype bfloat16"
                )
    return wide.astype(BY_NAME[target].raw, copy=False)


def _outputs(
    job: _Job, chunk: np.ndarray, extras: list[np.ndarray], src_dtypes: dict[str, str], allow_nonfinite: bool
) -> list:
    """The output pieces of one row chunk, one per entry of the job."""
    src_dtype = src_dtypes[job.source]
    if job.kind == "dequantize":
        scales, biases = (_to_mx(e, src_dtypes[n]) for e, n in zip(extras, job.extra_sources, strict=True))
        w = mx.dequantize(_to_mx(chunk, src_dtype), scales, biases, job.group_size, job.bits)
        return [w.astype(BY_NAME[job.dtype].mx)]
    if job.kind == "quantize":
        w = _cast_chunk(chunk, src_dtype, job.dtype, job.source, allow_nonfinite)
        return list(mx.quantize(mx.array(w) if isinstance(w, np.ndarray) else w, job.group_size, job.bits))
    if job.kind == "cast":
        return [_cast_chunk(chunk, src_dtype, job.dtype, job.source, allow_nonfinite)]
    if src_dtype in FLOATS and not allow_nonfinite:
        _check_finite(_widen(chunk, src_dtype), job.source)
    return [chunk]


def _run_job(
    job: _Job, source: Source, src_dtypes: dict[str, str], writer: ShardWriter, allow_nonfinite: bool = False
) -> None:
    """Read one source tensor, then cast / quantize / dequantize it in row chunks straight into the shards."""
    raw = source.read(job.source)
    if raw.size == 0:
        return  # nothing to write (the self-check rejects an empty weight the model needs)
    extras = [source.read(name) for name in job.extra_sources]
    rows = raw.shape[0] if raw.ndim > 1 else 1
    step = max(1, _CHUNK_BYTES // max(1, raw.nbytes // rows))
    for start in range(0, rows, step):
        chunk = raw[start : start + step] if raw.ndim > 1 else raw
        parts = [e[start : start + step] for e in extras]
        outputs = _outputs(job, chunk, parts, src_dtypes, allow_nonfinite)
        mx.eval([o for o in outputs if isinstance(o, mx.array)])
        for entry, part in zip(job.entries, outputs, strict=True):
            writer.write(entry, start * (entry.nbytes // rows), part)
    mx.clear_cache()  # MLX keeps freed buffers for reuse; return them so memory stays at one tensor


# ---------------------------------------------------------------------------------------------------------
# Config, the loadability check and the atomic output directory
# ---------------------------------------------------------------------------------------------------------
def _output_config(src: Source, options: _Options) -> dict:
    """The config.json to write: the source's, with dtype and quantization settings of this conversion."""
    config, path = dict(src.config), src.directory / "config.json"
    _check_config(config, str(path))
    quant = config.get("quantization")
    if options.dequantize and not isinstance(quant, dict):
        raise ConversionError(f"{path}: --dequantize needs a quantized MLX model (no 'quantization')")
    if not options.dequantize and quant is not None:
        raise ConversionError(f"{path}: the source is already quantized; use --dequantize")
    if "quantization_config" in config and not options.dequantize:
        qc = config["quantization_config"]
        method = qc.get("quant_method", "unknown") if isinstance(qc, dict) else "unknown"
        raise ConversionError(f"{path}: {str(method)[:40]}-quantized checkpoints are not supported")
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    config["torch_dtype"] = config["dtype"] = options.dtype
    if options.quantize:
        config["quantization"] = {"group_size": options.quantize[0], "bits": options.quantize[1]}
    return config


def _check_config(config: dict, where: str) -> None:
    """The source's config.json is one the model classes accept (checked before any weight is read)."""
    from .loading import model_class

    try:
        model_class(config, where).config_class.from_dict(config)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_loadable(config: dict, tensors: dict, where: str) -> None:
    """The tensors (anything with `.shape`) are exactly what the model config.json describes needs; raises
    ConversionError naming the field or tensor. Builds the model lazily: no weight is allocated."""
    from .loading import model_class
    from .modeling.quantized import quantize_model

    try:
        cls = model_class(config, f"{where}/config.json")
        cfg = cls.config_class.from_dict(config)
        check_layer_count(tensors, cfg.num_hidden_layers, where)
        model = cls(cfg)
        if cfg.quantization:
            q = cfg.quantization
            quantize_model(model, q["group_size"], q["bits"], lambda p, m: f"{p}.scales" in tensors, cpu=False)
        model.check_weights(model.sanitize(dict(tensors)), where)
    except MlxLlamaError as exc:
        raise ConversionError(f"the converted model would not load: {exc}") from None


def _check_written(tmp: Path, entries: list[Entry]) -> None:
    """Re-read the headers just written: every planned tensor is there, once, with its shape and dtype."""
    found = {}
    for file in checkpoint_files(tmp):
        found.update({n: (t.shape, t.dtype) for n, t in read_safetensors_header(file).items()})
    planned = {e.name: (tuple(e.shape), e.dtype) for e in entries}
    if found != planned:
        diff = sorted(set(found.items()) ^ set(planned.items()))
        raise ConversionError(f"internal: the written shards differ from the plan at {diff[0][0]}")


def _looks_like_model_output(directory: Path) -> bool:
    """Empty, or plain files including config.json and safetensors weights (what this converter writes)."""
    entries = list(directory.iterdir())
    if not entries:
        return True
    plain = all(p.is_file() and not p.is_symlink() for p in entries)
    return plain and (directory / "config.json").is_file() and any(p.suffix == ".safetensors" for p in entries)


def _check_output(output: Path, source_dir: Path, force: bool) -> None:
    """Refuse an output that exists (unless --force and it is a model output), overlaps the source, or whose
    parent cannot hold it."""
    if output.exists() or output.is_symlink():
        if not force:
            raise ConversionError(f"{output}: already exists; pass --force to replace it")
        if output.is_symlink() or not output.is_dir():
            raise ConversionError(f"{output}: not a directory; --force replaces only a model directory")
        out, src = output.resolve(), source_dir.resolve()
        if out == src or out in src.parents or src in out.parents:
            raise ConversionError(f"{output}: overlaps the source {source_dir}; choose another output directory")
        if not _looks_like_model_output(output):
            raise ConversionError(
                f"{output}: --force replaces only an empty directory or a model output (config.json and "
                "*.safetensors, no subdirectories); this one holds other things"
            )
    parent = next((p for p in output.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise ConversionError(f"{output}: cannot create it, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConversionError(f"{output}: cannot create it, {parent} is not writable")


def _replace(tmp: Path, output: Path) -> None:
    """Move the finished directory into place; an existing output (with --force) goes only after that."""
    old = None
    if output.exists() or output.is_symlink():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
    tmp.rename(output)
    if old is not None:
        shutil.rmtree(old)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a conversion, raised like Ctrl-C so that the partial output is removed."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _staging(output: Path) -> Iterator[Path]:
    """A hidden sibling directory to write into; removed (with any parents we created) unless it completes."""
    created = [p for p in [output.parent, *output.parent.parents] if not p.exists()]
    tmp = output.with_name(f".{output.name}.partial-{os.getpid()}")

    def clean() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()

    try:
        with _sigterm_raises():
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            yield tmp
    except BaseException as exc:
        clean()
        if isinstance(exc, OSError):
            raise ConversionError(f"{output}: writing failed ({exc.strerror or exc})") from None
        raise


class _Progress:
    """A one-line bar on a terminal; silent when piped or quiet."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled, 0

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            filled = 30 * self.done // max(self.total, 1)
            line = f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label[:60]:<60}"
            sys.stderr.write(line)
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------
def _write(src: Source, jobs: list[_Job], tmp: Path, options: _Options, quiet: bool | None) -> list[Entry]:
    """Stream every job into planned shards under `tmp`; returns the written entries."""
    entries = [e for job in jobs for e in job.entries]
    src_dtypes = {s.name: s.dtype for s in src.specs()}
    writer = ShardWriter(tmp, entries, options.shard_size)
    progress = _Progress(len(jobs), (not quiet) if quiet is not None else sys.stderr.isatty())
    try:
        for job in jobs:
            _run_job(job, src, src_dtypes, writer, options.allow_nonfinite)
            progress.step(job.source)
    finally:
        writer.close()
    writer.finish()
    return entries


def convert(
    source: str | Path,
    output: str | Path,
    *,
    dtype: str = "float16",
    quantize: bool = False,
    q_bits: int = 4,
    q_group_size: int = 64,
    dequantize: bool = False,
    max_shard_size: str | int = "5GB",
    force: bool = False,
    revision: str | None = None,
    llama_version: str | None = None,
    instruct: bool = False,
    quiet: bool | None = None,
    allow_nonfinite: bool = False,
) -> Path:
    """Convert `source` (a Transformers or Meta directory, or a Hub id) into an MLX directory at `output`.

    `quiet=None` shows progress only on a terminal. Raises MlxLlamaError subclasses for bad input; nothing is
    left at `output` unless the conversion completed, and what is left there is checked to load.
    """
    options = _Options.check(dtype, quantize, q_bits, q_group_size, dequantize, max_shard_size, allow_nonfinite)
    output = Path(output).expanduser()
    if (output.exists() or output.is_symlink()) and not force:
        raise ConversionError(f"{output}: already exists; pass --force to replace it")
    src_dir = hub.resolve_source(source, revision)
    _check_output(output, src_dir, force)
    src = open_source(src_dir, llama_version, instruct)
    config = _output_config(src, options)
    dequant = src.config.get("quantization") if options.dequantize else None
    jobs = _plan(src.specs(), options.dtype, options.quantize, dequant)
    entries = {e.name: e for job in jobs for e in job.entries}
    _check_loadable(config, entries, str(src_dir))
    with _staging(output) as tmp:
        written = _write(src, jobs, tmp, options, quiet)
        _check_written(tmp, written)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        src.write_tokenizer(tmp)
        check_tokenizer(src_dir, tmp)
        _replace(tmp, output)
    return output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `convert` options, shared by `python convert.py` and `mlx-llama convert`."""
    parser.add_argument("source", nargs="?", help="Transformers or Meta checkpoint directory, or a Hub repo id")
    parser.add_argument("output", nargs="?", help="output directory (must not exist unless --force)")
    add_seed_flags(parser)  # --input_dir, --output_dir, --model_size, --safe_serialization
    parser.add_argument("--dtype", default="float16", help="float16 (default), bfloat16 or float32")
    parser.add_argument("-q", "--quantize", action="store_true", help="quantize Linear and embedding weights")
    parser.add_argument("--q-bits", type=int, choices=Q_BITS, default=4, help="bits per weight (default 4)")
    parser.add_argument("--q-group-size", type=int, choices=Q_GROUP_SIZES, default=64, help="default 64")
    parser.add_argument("--dequantize", action="store_true", help="turn a quantized MLX model back into floats")
    parser.add_argument("--max-shard-size", default="5GB", help="largest output shard (default 5GB)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) for a repo id")
    parser.add_argument(
        "--llama-version",
        "--llama_version",
        choices=VERSIONS,
        help="Meta checkpoints: only when the files cannot tell (3.2 always)",
    )
    parser.add_argument("--instruct", action="store_true", help="Meta Llama 3.x Instruct: chat template, stop ids")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--allow-nonfinite", action="store_true", help="convert weights holding NaN or Inf")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> Path:
    """Run a conversion from parsed arguments; raises MlxLlamaError for bad input."""
    apply_seed_flags(args)
    return convert(
        args.source,
        args.output,
        dtype=args.dtype,
        quantize=args.quantize,
        q_bits=args.q_bits,
        q_group_size=args.q_group_size,
        dequantize=args.dequantize,
        max_shard_size=args.max_shard_size,
        force=args.force,
        revision=args.revision,
        llama_version=args.llama_version,
        instruct=args.instruct,
        quiet=True if args.quiet else None,
        allow_nonfinite=args.allow_nonfinite,
    )


def main(argv: list[str] | None = None) -> int:
    """`python convert.py SOURCE OUTPUT ...`: a one-line error and exit status 2 on bad input."""
    parser = argparse.ArgumentParser(prog="convert.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        out = run(args)
    except MlxLlamaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the partial output is already removed
        terminated = isinstance(exc, Terminated)
        end_bar = "\n" if sys.stderr.isatty() else ""  # a progress bar may be mid-line
        print(f"{end_bar}error: {'terminated' if terminated else 'interrupted'}; nothing was written", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)
    return 0
