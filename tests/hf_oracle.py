"""Build tiny Transformers models (the numerical oracle) and compare them with ours."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import torch
import transformers

TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)


def hf_config(**overrides) -> transformers.LlamaConfig:
    """A tiny Transformers LlamaConfig with eager attention (the exact reference path)."""
    kw = {**TINY, **overrides}
    return transformers.LlamaConfig(attn_implementation="eager", **kw)


def hf_model(cls_name: str = "LlamaForCausalLM", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(hf_config(**overrides)).eval()
    with torch.no_grad():  # random norm weights, so a wrong norm cannot hide behind ones
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model


def to_np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().numpy()
    if isinstance(x, mx.array):
        return np.array(x.astype(mx.float32))
    return np.asarray(x, dtype=np.float32)


def rel_err(ours, ref) -> float:
    """Max abs difference relative to the reference's scale (max abs value)."""
    a, b = to_np(ours), to_np(ref)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
