"""LoRA and DoRA wrappers around a Linear (float or quantized), named as PEFT names them.

The wrapper keeps the original layer as `base_layer` and adds `lora_A` ([r, in]) and `lora_B` ([out, r]),
plus `lora_magnitude_vector` ([out]) for DoRA, so `tree_flatten` names equal PEFT's state-dict keys and an
adapter file maps onto the model by prefix alone. The base layer stays frozen; a quantized one stays quantized.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn


def base_weight(layer: nn.Module) -> mx.array:
    """The dense [out, in] weight of a Linear, dequantizing a QuantizedLinear."""
    if isinstance(layer, nn.QuantizedLinear):
        return mx.dequantize(
            layer["weight"],
            layer["scales"],
            layer.get("biases"),
            group_size=layer.group_size,
            bits=layer.bits,
            mode=layer.mode,
        )
    return layer.weight


def linear_shape(layer: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of a Linear or QuantizedLinear."""
    if isinstance(layer, nn.QuantizedLinear):
        return layer["weight"].shape[0], layer["scales"].shape[-1] * layer.group_size
    return tuple(layer.weight.shape)


def lora_scaling(r: int, alpha: float, use_rslora: bool) -> float:
    """PEFT's scale: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


class LoRALinear(nn.Module):
    """y = base(x) + scaling * B(A(dropout(x))). `lora_B` starts at zero, so a fresh wrapper changes nothing."""

    def __init__(
        self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False
    ) -> None:
        super().__init__()
        out_features, in_features = linear_shape(base_layer)
        self.base_layer = base_layer
        self.r, self.lora_alpha = r, alpha
        self.scaling = lora_scaling(r, alpha, use_rslora)
        self.dropout_p = dropout
        self.lora_dropout = nn.Dropout(dropout)
        self.lora_A = nn.Linear(in_features, r, bias=False)
        self.lora_B = nn.Linear(r, out_features, bias=False)
        # PEFT's default init: A ~ kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        bound = 1 / math.sqrt(in_features)
        self.lora_A.weight = mx.random.uniform(-bound, bound, (r, in_features))
        self.lora_B.weight = mx.zeros((out_features, r))
        self.base_layer.freeze()

    def delta_weight(self) -> mx.array:
        """scaling * B @ A, the [out, in] update that fusing adds to the base weight."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def merged_weight(self) -> mx.array:
        """The base weight with the update folded in (float32 arithmetic, in the base layer's dense dtype)."""
        w = base_weight(self.base_layer)
        return (w.astype(mx.float32) + self.delta_weight().astype(mx.float32)).astype(w.dtype)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base_layer(x)
        z = self.lora_B(self.lora_A(self.lora_dropout(x).astype(self.lora_A.weight.dtype)))
        return y + (self.scaling * z).astype(y.dtype)


class DoRALinear(LoRALinear):
    """Weight-decomposed LoRA (PEFT's formula): y = base(x) + (m/n - 1) * W x + (m/n) * scaling * B A x.

    n = ||W + scaling * B A|| per output row, treated as a constant (no gradient), as the DoRA paper and
    PEFT do; m (`lora_magnitude_vector`) starts at ||W||, so a fresh wrapper changes nothing.
    """

    def __init__(
        self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False
    ) -> None:
        super().__init__(base_layer, r, alpha, dropout, use_rslora)
        self.lora_magnitude_vector = self.weight_norm()

    def weight_norm(self) -> mx.array:
        w = base_weight(self.base_layer).astype(mx.float32) + self.delta_weight().astype(mx.float32)
        return mx.sqrt(mx.sum(mx.square(w), axis=1))

    def merged_weight(self) -> mx.array:
        w = base_weight(self.base_layer)
        factor = self.lora_magnitude_vector.astype(mx.float32) / self.weight_norm()
        merged = factor[:, None] * (w.astype(mx.float32) + self.delta_weight().astype(mx.float32))
        return merged.astype(w.dtype)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base_layer(x)
        factor = self.lora_magnitude_vector / mx.stop_gradient(self.weight_norm())
        dropped = self.lora_dropout(x)
        if self.training and self.dropout_p > 0:  # dropout active: PEFT recomputes W x on dropped x
            wx = dropped @ base_weight(self.base_layer).astype(x.dtype).T
        else:
            wx = y - self.base_layer["bias"] if "bias" in self.base_layer else y
        z = self.lora_B(self.lora_A(dropped.astype(self.lora_A.weight.dtype)))
        return y + ((factor - 1) * wx + factor * self.scaling * z).astype(y.dtype)


def is_lora_layer(module: nn.Module) -> bool:
    return isinstance(module, LoRALinear)
