"""Convert Meta or Transformers LLaMA checkpoints to MLX safetensors: detect the layout, stream the tensors
one at a time, cast or quantize them, and write the result atomically.

Memory stays bounded by one merged source tensor plus a small working chunk: the output plan (names, shapes,
dtypes, byte offsets) is known before any weight is read, so every shard's header is written first and each
tensor's bytes go straight to their place in the file, in row chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from .checkpoint import hub
from .checkpoint.meta import MetaCheckpoint, TensorSpec, read_tokenizer
from .checkpoint.safetensors_io import INDEX_FILE, SINGLE_FILE, parse_size
from .checkpoint.torch_pickle import LazyTensor, load_torch_file
from .dtypes import dtype_name, parse_dtype
from .errors import CheckpointError, ConfigError, ConversionError, MlxLlamaError
from .jsonio import read_json_object

# dtype name -> (safetensors code, numpy dtype of the raw bytes, mlx dtype); bfloat16 travels as uint16
_DTYPES = {
    "float32": ("F32", np.float32, mx.float32),
    "float16": ("F16", np.float16, mx.float16),
    "bfloat16": ("BF16", np.uint16, mx.bfloat16),
    "float64": ("F64", np.float64, mx.float64),
    "int64": ("I64", np.int64, mx.int64),
    "int32": ("I32", np.int32, mx.int32),
    "int16": ("I16", np.int16, mx.int16),
    "int8": ("I8", np.int8, mx.int8),
    "uint32": ("U32", np.uint32, mx.uint32),
    "uint8": ("U8", np.uint8, mx.uint8),
    "bool": ("BOOL", np.bool_, mx.bool_),
}
_BY_CODE = {code: name for name, (code, _, _) in _DTYPES.items()}
_FLOATS = {"float32", "float16", "bfloat16", "float64"}
_SUPPORTED_MODEL_TYPES = {"llama", "open-llama"}
_NOT_QUANTIZED = {"score", "qa_outputs"}  # tiny classification heads stay in float
_TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)
_CHUNK_BYTES = 16 << 20  # per cast/quantize step: a few of these live at once, on top of the tensor
Q_BITS = (2, 3, 4, 6, 8)
Q_GROUP_SIZES = (32, 64, 128)


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------
def read_safetensors_header(path: Path) -> dict[str, LazyTensor]:
    """The tensors of a .safetensors file as lazy, memory-mapped views; validates offsets against the size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _BY_CODE[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name} has an unsupported or malformed header entry") from None
        np_dtype = _DTYPES[dtype][1]
        if end - begin != int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype).itemsize:
            raise CheckpointError(f"{path}: tensor {name}: byte range does not match its shape {list(shape)}")
        if 8 + n + end > size:
            raise CheckpointError(f"{path}: tensor {name} runs past the end of the file (truncated?)")
        tensors[name] = LazyTensor.contiguous(path, 8 + n + begin, shape, dtype, np_dtype)
    return tensors


class TransformersSource:
    """A Transformers checkpoint directory: config.json + safetensors (preferred) or pytorch_model*.bin."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.config = read_json_object(directory / "config.json")
        model_type = self.config.get("model_type")
        if model_type not in _SUPPORTED_MODEL_TYPES:
            arch = ", ".join(self.config.get("architectures") or []) or "no architectures"
            raise ConversionError(
                f"{directory / 'config.json'}: unsupported architecture model_type={model_type!r} ({arch}); "
                f"this converter handles {', '.join(sorted(_SUPPORTED_MODEL_TYPES))}"
            )
        self.tensors: dict[str, LazyTensor] = {}
        files, reader = self._weight_files()
        for path in files:
            for name, tensor in reader(path).items():
                if name in self.tensors:
                    raise CheckpointError(f"{path}: tensor {name} also appears in another shard")
                self.tensors[name] = tensor
        # Old checkpoints saved the rotary inverse frequencies as a buffer; they are not weights.
        self.tensors = {n: t for n, t in self.tensors.items() if not n.endswith("rotary_emb.inv_freq")}
        if not self.tensors:
            raise CheckpointError(f"{directory}: the weight files hold no tensors")

    def _weight_files(self):
        d = self.directory
        for index_name, pattern, reader in (
            ("model.safetensors.index.json", "*.safetensors", read_safetensors_header),
            ("pytorch_model.bin.index.json", "pytorch_model*.bin", load_torch_file),
        ):
            index = d / index_name
            if index.is_file():
                weight_map = read_json_object(index).get("weight_map")
                if not isinstance(weight_map, dict):
                    raise CheckpointError(f"{index}: no weight_map")
                files = [d / f for f in sorted(set(weight_map.values()))]
                for path in files:
                    if not path.is_file():
                        raise CheckpointError(f"{path}: listed in {index_name} but missing")
                return files, reader
            files = sorted(d.glob(pattern))
            if files:
                return files, reader
        raise CheckpointError(f"{d}: config.json found but no *.safetensors or pytorch_model*.bin weights")

    def specs(self) -> list[TensorSpec]:
        return [TensorSpec(n, t.shape, t.dtype) for n, t in self.tensors.items()]

    def read(self, name: str) -> np.ndarray:
        return self.tensors[name].numpy()


def open_source(directory: Path, llama_version: str | None):
    """Detect the layout from the files present."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory")
    if not any(directory.iterdir()):
        raise CheckpointError(f"{directory}: the directory is empty")
    if (directory / "config.json").is_file():
        return TransformersSource(directory)
    if (directory / "params.json").is_file() or any(directory.glob("consolidated.*.pth")):
        return MetaCheckpoint(directory, llama_version)
    raise CheckpointError(f"{directory}: neither config.json (Transformers layout) nor params.json (Meta layout) found")


# ---------------------------------------------------------------------------------------------------------
# Output plan and streaming writer
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    """One tensor in an output shard."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    shard: int = 0
    offset: int = 0
    written: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(_DTYPES[self.dtype][1]).itemsize


@dataclass
class _Job:
    """How one source tensor becomes output tensors: 'copy', 'cast', 'quantize' or 'dequantize'."""

    source: str
    kind: str
    dtype: str
    entries: list[_Entry]
    group_size: int = 0
    bits: int = 0
    extra_sources: list[str] = field(default_factory=list)  # scales, biases when dequantizing


class ShardWriter:
    """Writes planned safetensors shards whose headers are known up front; bytes land at their offsets."""

    def __init__(self, directory: Path, entries: list[_Entry], max_shard_size: int):
        shards: list[list[_Entry]] = [[]]
        size = 0
        for entry in entries:
            if shards[-1] and size + entry.nbytes > max_shard_size:
                shards.append([])
                size = 0
            entry.shard, entry.offset = len(shards) - 1, size
            shards[-1].append(entry)
            size += entry.nbytes
        n = len(shards)
        self.names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.files = []
        self.data_start = []
        for name, members in zip(self.names, shards, strict=True):
            header = {"__metadata__": {"format": "mlx"}}
            for e in members:
                header[e.name] = {
                    "dtype": _DTYPES[e.dtype][0],
                    "shape": list(e.shape),
                    "data_offsets": [e.offset, e.offset + e.nbytes],
                }
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)
            f = open(directory / name, "wb")
            f.write(struct.pack("<Q", len(blob)) + blob)
            self.files.append(f)
            self.data_start.append(8 + len(blob))
        self.entries = entries
        self.directory = directory

    def write(self, entry: _Entry, at: int, array: np.ndarray | mx.array) -> None:
        """Write `array`'s bytes at byte `at` within `entry`'s data."""
        if isinstance(array, mx.array) and array.dtype == mx.bfloat16:
            array = array.view(mx.uint16)
        data = memoryview(np.ascontiguousarray(np.asarray(array))).cast("B")
        if at + len(data) > entry.nbytes:
            raise ConversionError(f"internal: {entry.name} overflows its planned size")
        f = self.files[entry.shard]
        f.seek(self.data_start[entry.shard] + entry.offset + at)
        f.write(data)
        entry.written += len(data)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def finish(self) -> None:
        """After a complete run: check every byte was written and add the index for several shards."""
        for e in self.entries:
            if e.written != e.nbytes:
                raise ConversionError(f"internal: {e.name}: wrote {e.written} of {e.nbytes} bytes")
        if len(self.names) > 1:
            index = {
                "metadata": {"total_size": sum(e.nbytes for e in self.entries)},
                "weight_map": {e.name: self.names[e.shard] for e in sorted(self.entries, key=lambda e: e.name)},
            }
            (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _quantizable(name: str, shape: tuple[int, ...], group_size: int) -> bool:
    """Linear and embedding weights (2D `.weight`), not norms nor the classification heads."""
    module = name.rsplit(".", 2)[-2] if name.count(".") else ""
    return len(shape) == 2 and name.endswith(".weight") and module not in _NOT_QUANTIZED and shape[-1] % group_size == 0


def _plan(specs: list[TensorSpec], dtype: str, quantize: tuple[int, int] | None, dequant: dict | None) -> list[_Job]:
    """Decide, before reading anything, what each source tensor becomes and the exact output shapes."""
    names = {s.name for s in specs}
    packed = set()
    if dequant is not None:
        packed = {n.removesuffix(".scales") for n in names if n.endswith(".scales") and f"{n[:-7]}.weight" in names}
    jobs = []
    for spec in specs:
        out = dtype if spec.dtype in _FLOATS else spec.dtype
        base = spec.name.rsplit(".", 1)[0]
        if base in packed and spec.name != f"{base}.weight":
            continue  # scales and biases are consumed by their weight's dequantize job
        if base in packed:
            override = dequant.get(base)
            settings = override if isinstance(override, dict) else dequant
            if settings.get("mode", "affine") != "affine" or f"{base}.biases" not in names:
                raise ConversionError(f"{base}: only affine quantization (scales and biases) can be dequantized")
            group, bits = int(settings["group_size"]), int(settings["bits"])
            shape = (*spec.shape[:-1], spec.shape[-1] * 32 // bits)
            extra = [f"{base}.scales", f"{base}.biases"]
            jobs.append(_Job(spec.name, "dequantize", dtype, [_Entry(spec.name, shape, dtype)], group, bits, extra))
        elif quantize is not None and spec.dtype in _FLOATS and _quantizable(spec.name, spec.shape, quantize[0]):
            group, bits = quantize
            rows, cols = spec.shape
            entries = [
                _Entry(spec.name, (rows, cols * bits // 32), "uint32"),
                _Entry(f"{base}.scales", (rows, cols // group), out),
                _Entry(f"{base}.biases", (rows, cols // group), out),
            ]
            jobs.append(_Job(spec.name, "quantize", out, entries, group, bits))
        else:
            kind = "cast" if out != spec.dtype else "copy"
            jobs.append(_Job(spec.name, kind, out, [_Entry(spec.name, spec.shape, out)]))
    return jobs


def _to_mx(raw: np.ndarray, dtype: str) -> mx.array:
    array = mx.array(raw)
    return array.view(mx.bfloat16) if dtype == "bfloat16" else array


_F16_OVERFLOW = 65520.0  # the smallest magnitude that rounds to infinity in float16


def _cast_chunk(raw: np.ndarray, src: str, target: str, name: str) -> np.ndarray | mx.array:
    """Cast a raw chunk with round-to-nearest-even, as torch does; float16 overflow is an error.

    numpy does the float16/float32 casts (several times faster than MLX's CPU kernels on half types);
    the widening from bfloat16 is exact (its bits are the top half of a float32).
    """
    if src == "bfloat16":
        wide = raw.astype(np.uint32)
        wide <<= 16
        wide = wide.view(np.float32)
    else:
        wide = raw.astype(np.float32, copy=False)
    if target == "bfloat16":
        return mx.array(wide).astype(mx.bfloat16)
    if target == "float16" and wide.size:
        peak = max(float(wide.max()), -float(wide.min()))
        if peak >= _F16_OVERFLOW:
            with np.errstate(over="ignore"):
                overflow = (np.isinf(wide.astype(np.float16)) & ~np.isinf(wide)).any()
            if overflow:
                raise ConversionError(
                    f"{name}: values up to {peak:.4g} overflow float16 (max 65504); convert with --dtype bfloat16"
                )
    return wide.astype(_DTYPES[target][1], copy=False)


def _run_job(job: _Job, source, src_dtypes: dict[str, str], writer: ShardWriter) -> None:
    """Read one source tensor, then cast / quantize / dequantize it in row chunks straight into the shards."""
    src_dtype = src_dtypes[job.source]
    raw = source.read(job.source)
    extras = [source.read(name) for name in job.extra_sources]
    rows = raw.shape[0] if raw.ndim > 1 else 1
    step = max(1, _CHUNK_BYTES // max(1, raw.nbytes // rows))
    for start in range(0, rows, step):
        chunk = raw[start : start + step] if raw.ndim > 1 else raw
        if job.kind == "dequantize":
            scales, biases = (
                _to_mx(e[start : start + step], src_dtypes[n]) for e, n in zip(extras, job.extra_sources, strict=True)
            )
            w = mx.dequantize(_to_mx(chunk, src_dtype), scales, biases, job.group_size, job.bits)
            outputs = [w.astype(_DTYPES[job.dtype][2])]
        elif job.kind == "quantize":
            w = _cast_chunk(chunk, src_dtype, job.dtype, job.source)
            outputs = list(mx.quantize(mx.array(w) if isinstance(w, np.ndarray) else w, job.group_size, job.bits))
        elif job.kind == "cast":
            outputs = [_cast_chunk(chunk, src_dtype, job.dtype, job.source)]
        else:
            outputs = [chunk]
        mx.eval([o for o in outputs if isinstance(o, mx.array)])
        for entry, part in zip(job.entries, outputs, strict=True):
            writer.write(entry, start * (entry.nbytes // rows), part)
    mx.clear_cache()  # MLX keeps freed buffers for reuse; return them so memory stays at one tensor


# ---------------------------------------------------------------------------------------------------------
# Config, tokenizer and the atomic output directory
# ---------------------------------------------------------------------------------------------------------
def _write_meta_tokenizer(source: MetaCheckpoint, tmp: Path) -> None:
    """tokenizer.model plus the configs Transformers' LlamaTokenizer reads (LLaMA 1/2 conventions)."""
    if source.tokenizer_path is None:
        print(f"warning: no tokenizer.model beside {source.directory}; the output has no tokenizer", file=sys.stderr)
        return
    shutil.copyfile(source.tokenizer_path, tmp / "tokenizer.model")
    sp = read_tokenizer(source.tokenizer_path)
    special = {
        "bos_token": sp.IdToPiece(sp.bos_id()),
        "eos_token": sp.IdToPiece(sp.eos_id()),
        "unk_token": sp.IdToPiece(sp.unk_id()),
    }
    tokenizer_config = {
        "tokenizer_class": "LlamaTokenizer",
        **special,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": source.config["max_position_embeddings"],
    }
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _check_output(output: Path, source_dir: Path, force: bool) -> None:
    if output.exists() or output.is_symlink():
        if not force:
            raise ConversionError(f"{output}: already exists; pass --force to replace it")
        out, src = output.resolve(), source_dir.resolve()
        if out == src or out in src.parents or src in out.parents:
            raise ConversionError(f"{output}: overlaps the source {source_dir}; choose another output directory")


def _replace(tmp: Path, output: Path) -> None:
    """Move the finished directory into place; an existing output (with --force) goes only after that."""
    old = None
    if output.exists() or output.is_symlink():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
    tmp.rename(output)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


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
    quiet: bool | None = None,
) -> Path:
    """Convert `source` (a Transformers or Meta directory, or a Hub id) into an MLX directory at `output`.

    `quiet=None` shows progress only on a terminal. Raises MlxLlamaError subclasses for bad input; nothing is
    left at `output` unless the conversion completed.
    """
    target = dtype_name(parse_dtype(dtype, "--dtype"))
    if quantize and dequantize:
        raise ConfigError("--quantize and --dequantize are mutually exclusive")
    if quantize and (q_bits not in Q_BITS or q_group_size not in Q_GROUP_SIZES):
        raise ConfigError(f"--q-bits must be one of {Q_BITS} and --q-group-size one of {Q_GROUP_SIZES}")
    shard_size = parse_size(max_shard_size)
    if shard_size <= 0:
        raise ConfigError(f"--max-shard-size: must be positive, got {max_shard_size!r}")
    output = Path(output).expanduser()
    if (output.exists() or output.is_symlink()) and not force:
        raise ConversionError(f"{output}: already exists; pass --force to replace it")
    src_dir = hub.resolve_source(source, revision)
    _check_output(output, src_dir, force)
    src = open_source(src_dir, llama_version)
    config = dict(src.config)
    quant_settings = config.get("quantization")
    if dequantize and not isinstance(quant_settings, dict):
        raise ConversionError(
            f"{src_dir / 'config.json'}: --dequantize needs a quantized MLX model (no 'quantization')"
        )
    if not dequantize and quant_settings is not None:
        raise ConversionError(f"{src_dir / 'config.json'}: the source is already quantized; use --dequantize")
    if "quantization_config" in config and not dequantize:
        method = (config["quantization_config"] or {}).get("quant_method", "unknown")
        raise ConversionError(f"{src_dir / 'config.json'}: {method}-quantized checkpoints are not supported")

    jobs = _plan(
        src.specs(), target, (q_group_size, q_bits) if quantize else None, quant_settings if dequantize else None
    )
    src_dtypes = {s.name: s.dtype for s in src.specs()}
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    config["torch_dtype"] = target
    config["dtype"] = target
    if quantize:
        config["quantization"] = {"group_size": q_group_size, "bits": q_bits}

    created = [p for p in [output.parent, *output.parent.parents] if not p.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        entries = [e for job in jobs for e in job.entries]
        writer = ShardWriter(tmp, entries, shard_size)
        progress = _Progress(len(jobs), (not quiet) if quiet is not None else sys.stderr.isatty())
        try:
            for job in jobs:
                _run_job(job, src, src_dtypes, writer)
                progress.step(job.source)
        finally:
            writer.close()
        writer.finish()
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if isinstance(src, MetaCheckpoint):
            _write_meta_tokenizer(src, tmp)
        else:
            for name in _TOKENIZER_FILES:
                if (src_dir / name).is_file():
                    shutil.copyfile(src_dir / name, tmp / name)
        _replace(tmp, output)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        if isinstance(exc, OSError):
            raise ConversionError(f"{output}: writing failed ({exc})") from None
        raise
    return output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `convert` options, shared by `python convert.py` and `mlx-llama convert`."""
    parser.add_argument("source", help="Transformers or Meta checkpoint directory, or a Hugging Face Hub repo id")
    parser.add_argument("output", help="output directory (must not exist unless --force)")
    parser.add_argument("--dtype", default="float16", help="float16 (default), bfloat16 or float32")
    parser.add_argument("-q", "--quantize", action="store_true", help="quantize Linear and embedding weights")
    parser.add_argument("--q-bits", type=int, choices=Q_BITS, default=4, help="bits per weight (default 4)")
    parser.add_argument("--q-group-size", type=int, choices=Q_GROUP_SIZES, default=64, help="default 64")
    parser.add_argument("--dequantize", action="store_true", help="turn a quantized MLX model back into floats")
    parser.add_argument("--max-shard-size", default="5GB", help="largest output shard (default 5GB)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) for a repo id")
    parser.add_argument("--llama-version", choices=("1", "2"), help="only when params.json cannot tell")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> Path:
    """Run a conversion from parsed arguments; raises MlxLlamaError for bad input."""
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
        quiet=True if args.quiet else None,
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
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)
    return 0
