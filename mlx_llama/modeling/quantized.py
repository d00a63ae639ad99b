"""Quantized layers for loading quantized checkpoints; on MLX's CPU backend they are `CPUQuantizedLinear`
(modeling/cpu_linear.py: dequantize + GEMM for prompts, the quantized kernel split over the cores for decoding).
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.nn as nn
from mlx.utils import tree_map_with_path

from .cpu_linear import CPUQuantizedLinear


def quantize_model(
    model: nn.Module, group_size: int, bits: int, predicate: Callable[[str, nn.Module], bool], cpu: bool
) -> None:
    """Swap the Linear/Embedding layers chosen by `predicate` for quantized ones, in place (as nn.quantize)."""

    def swap(path: str, module: nn.Module) -> nn.Module:
        if not predicate(path, module):
            return module
        if isinstance(module, nn.Linear):
            cls = CPUQuantizedLinear if cpu else nn.QuantizedLinear
            return cls.from_linear(module, group_size, bits)
        if isinstance(module, nn.Embedding):
            return nn.QuantizedEmbedding.from_embedding(module, group_size, bits)
        return module

    leaves = tree_map_with_path(swap, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)
