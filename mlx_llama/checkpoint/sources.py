"""One interface over the checkpoint layouts a conversion reads.

A source has `directory`, `config` (a config.json dict), `specs()` (every output tensor's name, shape and
dtype, nothing read), `read(name)` (one tensor as numpy, bfloat16 as raw uint16) and `write_tokenizer(out)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import CheckpointError
from .meta import MetaCheckpoint
from .spec import TensorSpec
from .transformers_dir import TransformersSource


class Source(Protocol):
    directory: Path
    config: dict

    def specs(self) -> list[TensorSpec]: ...

    def read(self, name: str) -> np.ndarray: ...

    def write_tokenizer(self, out: Path) -> None: ...


def open_source(directory: Path, llama_version: str | None = None, instruct: bool = False) -> Source:
    """Detect the layout from the files present."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory")
    if not any(directory.iterdir()):
        raise CheckpointError(f"{directory}: the directory is empty")
    if (directory / "config.json").is_file():
        return TransformersSource(directory)
    if (directory / "params.json").is_file() or any(directory.glob("consolidated.*.pth")):
        return MetaCheckpoint(directory, llama_version, instruct)
    raise CheckpointError(f"{directory}: neither config.json (Transformers layout) nor params.json (Meta layout) found")
