"""What a conversion source promises about each tensor before any byte is read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be produced: its Transformers name, full shape and dtype name (bfloat16, float16, ...)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
