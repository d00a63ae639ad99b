"""Safetensors checkpoints on disk <-> dicts of mx.array, in the Transformers layout.

Reading goes through `mx.load`, which maps each tensor lazily: nothing is read until the array is evaluated,
and then straight into MLX memory, so no second copy of the weights ever sits in Python. Writing shards by
size and adds `model.safetensors.index.json` as Transformers does, so either library loads the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import mlx.core as mx

from ..errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = 5 * 10**9


def parse_size(size: int | str) -> int:
    """'5GB' / '500MB' / '2GiB' / 1000 -> bytes (decimal units as Transformers, binary with 'i')."""
    if isinstance(size, int):
        return size
    text = size.strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, scale in units.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * scale)
            except ValueError:
                break
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"invalid shard size {size!r}; expected e.g. '5GB', '500MB' or a byte count") from None


def checkpoint_files(path: str | Path) -> list[Path]:
    """The safetensors files of a model directory: the index's shards, or the single file."""
    path = Path(path)
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = [path / name for name in dict.fromkeys(weight_map.values())]
        for file in files:
            if not file.is_file():
                raise CheckpointError(f"{index}: lists shard {file.name}, which is missing from {path}")
        return files
    if (path / SINGLE_FILE).is_file():
        return [path / SINGLE_FILE]
    found = sorted(path.glob("*.safetensors"))
    if found:
        return found
    raise CheckpointError(
        f"{path}: no {SINGLE_FILE} or {INDEX_FILE} found; convert other formats with `mlx-llama convert`"
    )


def load_safetensors(path: str | Path) -> dict[str, mx.array]:
    """All tensors of a model directory (or one .safetensors file), lazily."""
    path = Path(path)
    files = [path] if path.is_file() else checkpoint_files(path)
    weights: dict[str, mx.array] = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as e:  # MLX raises RuntimeError/ValueError with low-level text
            raise CheckpointError(f"{file}: cannot read safetensors file ({e}); is it truncated or corrupt?") from None
    return weights


def save_safetensors(path: str | Path, weights: dict[str, mx.array], max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
                     metadata: dict[str, str] | None = None) -> list[str]:
    """Write weights into `path` as one file or size-bounded shards plus an index; returns the file names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    shards = list(_shard(weights.items(), parse_size(max_shard_size)))
    meta = {"format": "mlx", **(metadata or {})}
    if len(shards) == 1:
        mx.save_safetensors(str(path / SINGLE_FILE), dict(shards[0]), metadata=meta)
        return [SINGLE_FILE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for name, shard in zip(names, shards):
        mx.save_safetensors(str(path / name), dict(shard), metadata=meta)
        weight_map.update({key: name for key, _ in shard})
    total = sum(v.nbytes for v in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return names


def _shard(items: Iterable[tuple[str, mx.array]], max_bytes: int) -> Iterable[list[tuple[str, mx.array]]]:
    current: list[tuple[str, mx.array]] = []
    size = 0
    for key, value in items:
        if current and size + value.nbytes > max_bytes:
            yield current
            current, size = [], 0
        current.append((key, value))
        size += value.nbytes
    if current:
        yield current
