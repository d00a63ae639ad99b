"""Quantized layers for loading quantized checkpoints, with a faster multi-token path on MLX's CPU backend.

MLX's CPU `quantized_matmul` is quick for one token (decode) but scales badly with the number of rows:
measured here for a 2048x5632 4-bit projection, 9 ms for 1 row but 1.15 s for 128 rows, while
dequantizing the weight and running a BLAS GEMM takes ~100 ms at any row count. So on the CPU, prompts
(and other multi-row inputs) take the dequantize + GEMM path; decoding keeps the quantized kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

GEMM_MIN_ROWS = 16  # the measured crossover between the two paths (2 CPU cores, OpenBLAS)


class CPUQuantizedLinear(nn.QuantizedLinear):
    """nn.QuantizedLinear that dequantizes for inputs of GEMM_MIN_ROWS rows or more (same weights, same names)."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.size // x.shape[-1] < GEMM_MIN_ROWS:
            return super().__call__(x)
        w = mx.dequantize(
            self["weight"],
            self["scales"],
            self.get("biases"),
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
        )
        y = x @ w.astype(x.dtype).T
        return y + self["bias"] if "bias" in self else y


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
