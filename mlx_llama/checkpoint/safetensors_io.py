"""Safetensors checkpoints on disk <-> dicts of mx.array, in the Transformers layout.

Reading goes through `mx.load`, which maps each tensor lazily: nothing is read until the array is evaluated,
and then straight into MLX memory, so no second copy of the weights ever sits in Python. Every header is
validated first (`safetensors_header`), so a hostile file fails cleanly before MLX parses it. Writing shards
by size and adds `model.safetensors.index.json` as Transformers does, so either library loads the result.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlx.core as mx

from ..errors import CheckpointError, ConfigError, shorten
from .index import shard_files, write_index
from .paths import inside
from .safetensors_header import read_safetensors_header
from .shards import INDEX_FILE, SINGLE_FILE, plan_shards, shard_names

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "INDEX_FILE",
    "SINGLE_FILE",
    "checkpoint_files",
    "load_safetensors",
    "parse_size",
    "read_safetensors_header",
    "save_safetensors",
]

DEFAULT_MAX_SHARD_SIZE = 5 * 10**9
_UNITS = {
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "B": 1,
}


def parse_size(size: int | str) -> int:
    """'5GB' / '500MB' / '2GiB' / 1000 -> a positive byte count (decimal units as Transformers, binary with 'i')."""
    value: float | None = None
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    elif isinstance(size, str):
        text = size.strip().upper()
        unit = next((u for u in _UNITS if text.endswith(u)), "B" if text[-1:].isdigit() else None)
        try:
            number = float(text[: len(text) - len(unit)]) if unit and text.endswith(unit) else float(text)
            value = number * _UNITS[unit or "B"]
        except (ValueError, KeyError):
            value = None
    if value is None or not math.isfinite(value) or value < 1 or value > 2**62:
        raise ConfigError(
            f"invalid shard size {shorten(size)}; expected a positive size such as '5GB', '500MB' or a byte count"
        )
    return int(value)


def checkpoint_files(path: str | Path) -> list[Path]:
    """The safetensors files of a model directory: the index's shards, or the single file."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        return shard_files(path / INDEX_FILE)
    if (path / SINGLE_FILE).is_file():
        return [inside(path, SINGLE_FILE, str(path))]
    found = sorted(path.glob("*.safetensors"))
    if found:
        return [inside(path, p.name, str(path)) for p in found]
    raise CheckpointError(
        f"{path}: no {SINGLE_FILE} or {INDEX_FILE} found; convert other formats with `mlx-llama convert`"
    )


def load_safetensors(path: str | Path) -> dict[str, mx.array]:
    """All tensors of a model directory (or one .safetensors file), lazily; a name in two files is an error."""
    path = Path(path)
    files = [path] if path.is_file() else checkpoint_files(path)
    weights: dict[str, mx.array] = {}
    for file in files:
        names = read_safetensors_header(file)
        again = next((n for n in names if n in weights), None)
        if again is not None:
            raise CheckpointError(f"{file}: tensor {shorten(again)} also appears in another shard")
        try:
            weights.update(mx.load(str(file)))
        except Exception as e:  # MLX raises RuntimeError/ValueError with low-level text
            raise CheckpointError(f"{file}: cannot read safetensors file ({e}); is it truncated or corrupt?") from None
    return weights


def save_safetensors(
    path: str | Path,
    weights: dict[str, mx.array],
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write weights into `path` as one file or size-bounded shards plus an index; returns the file names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    items = list(weights.items())
    shards = plan_shards([v.nbytes for _, v in items], parse_size(max_shard_size))
    names = shard_names(len(shards))
    meta = {"format": "mlx", **(metadata or {})}
    weight_map: dict[str, str] = {}
    for name, members in zip(names, shards, strict=True):
        mx.save_safetensors(str(path / name), {items[i][0]: items[i][1] for i in members}, metadata=meta)
        weight_map.update({items[i][0]: name for i in members})
    if len(names) > 1:
        write_index(path / INDEX_FILE, weight_map, sum(v.nbytes for v in weights.values()))
    return names
