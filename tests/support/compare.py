"""How the tests measure a numerical difference."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import torch


def to_np(x) -> np.ndarray:
    """A float32 numpy copy of a torch tensor, an MLX array or anything array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().numpy()
    if isinstance(x, mx.array):
        return np.array(x.astype(mx.float32))
    return np.asarray(x, dtype=np.float32)


def rel_err(ours, ref) -> float:
    """Max abs difference relative to the reference's scale (max abs value)."""
    a, b = to_np(ours), to_np(ref)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
