"""The sharded-checkpoint index (`*.index.json`): read with every shard confined to the directory, written
as Transformers writes it."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError, shorten
from ..jsonio import read_json_object
from .paths import inside


def read_weight_map(index: str | Path) -> dict[str, str]:
    """tensor name -> shard file name, validated: names are strings, shards exist inside the directory."""
    index = Path(index)
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: `weight_map` must be a non-empty object of tensor name -> shard file")
    for name, file in weight_map.items():
        if not isinstance(file, str):
            raise CheckpointError(f"{index}: weight_map[{shorten(name)}] is {shorten(file)}, expected a file name")
    return weight_map


def shard_files(index: str | Path) -> list[Path]:
    """The distinct shard files an index lists, in order of first mention; each must exist in its directory."""
    index = Path(index)
    files = []
    for name in dict.fromkeys(read_weight_map(index).values()):
        path = inside(index.parent, name, f"{index}: weight_map")
        if not path.is_file():
            raise CheckpointError(f"{index}: lists shard {shorten(name)}, which is missing from {index.parent}")
        files.append(path)
    return files


def write_index(path: str | Path, weight_map: dict[str, str], total_size: int) -> None:
    """`{"metadata": {"total_size"}, "weight_map"}` with names sorted, as Transformers writes it."""
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    Path(path).write_text(json.dumps(index, indent=2) + "\n")
