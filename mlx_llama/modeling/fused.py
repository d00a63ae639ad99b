"""Optional load-time fusion: q/k/v into one `qkv_proj`, gate/up into one `gate_up_proj` per layer.

One matmul instead of three (two) per layer and step reads the same bytes but launches fewer kernels and
keeps the input in cache. The checkpoint format is unchanged: `save_pretrained` splits the fused tensors
back into Transformers' names (`unfuse_weights`). Quantized layers fuse too: quantization groups run along
the input dimension, so output rows of weight, scales and biases simply stack. Off unless asked for
(`fuse_projections(model)`, CLI `--fuse`), because adapters (LoRA) and per-projection hooks need the
separate modules.
"""

from __future__ import annotations

import copy

import mlx.core as mx
import mlx.nn as nn

from .cpu_linear import use_input_major_layout

ARRAY_KEYS = ("weight", "scales", "biases", "bias")


def _stack(mods: list[nn.Module]) -> nn.Module:
    """One module of the same class whose output rows are the given modules' rows, in order."""
    fused = copy.copy(mods[0])
    for key in ARRAY_KEYS:
        if key in mods[0]:
            fused[key] = mx.concatenate([m[key] for m in mods], axis=0)
    if hasattr(fused, "output_dims"):
        fused.output_dims = sum(m[ARRAY_KEYS[0]].shape[0] for m in mods)
    return fused


def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse every decoder layer's q/k/v and gate/up projections in place; returns the model."""
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if "q_proj" in attn:
            attn.qkv_proj = _stack([attn.q_proj, attn.k_proj, attn.v_proj])
            for name in ("q_proj", "k_proj", "v_proj"):
                del attn[name]
        if "gate_proj" in mlp:
            mlp.gate_up_proj = _stack([mlp.gate_proj, mlp.up_proj])
            del mlp["gate_proj"], mlp["up_proj"]
    mx.eval(model.parameters())
    use_input_major_layout(model)  # the concatenation is stored [out, in]; on the CPU, store it input-major again
    return model


def unfuse_weights(weights: dict[str, mx.array], config) -> dict[str, mx.array]:
    """Transformers' names for a state dict that holds fused projections (a no-op without them)."""
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim
    out = {}
    for key, value in weights.items():
        if ".self_attn.qkv_proj." in key:
            prefix, leaf = key.split(".qkv_proj.")
            parts = mx.split(value, [q_rows, q_rows + kv_rows], axis=0)
            out.update({f"{prefix}.{n}.{leaf}": p for n, p in zip(("q_proj", "k_proj", "v_proj"), parts)})
        elif ".mlp.gate_up_proj." in key:
            prefix, leaf = key.split(".gate_up_proj.")
            gate, up = mx.split(value, 2, axis=0)
            out.update({f"{prefix}.gate_proj.{leaf}": gate, f"{prefix}.up_proj.{leaf}": up})
        else:
            out[key] = value
    return out
