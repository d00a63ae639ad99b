"""`resize_token_embeddings` with Transformers' rules, e.g. after adding a pad token (the Llama 2 advice).

New rows follow Transformers' `mean_resizing=True`: a draw from a normal with the old rows' mean and
1e-9 times their covariance (so they sit at the mean, the choice that leaves every old token's
probability almost unchanged), or exactly the mean when that covariance is not positive definite.
With `mean_resizing=False` they get the usual N(0, initializer_range) init. The output projection
(`lm_head`) is resized the same way; a tied model has none, so its input and output stay one matrix.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import ConfigError

COVARIANCE_SCALE = 1e-9


def _new_rows(old: np.ndarray, added: int, mean_resizing: bool, std: float, rng: np.random.Generator) -> np.ndarray:
    if not mean_resizing:
        return rng.normal(0.0, std, size=(added, old.shape[1])).astype(np.float32)
    mean = old.mean(axis=0)
    centered = old - mean
    covariance = centered.T @ centered / old.shape[0]
    try:
        factor = np.linalg.cholesky(COVARIANCE_SCALE * covariance)  # fails unless positive definite
    except np.linalg.LinAlgError:
        return np.repeat(mean[None], added, axis=0)
    return (mean + rng.standard_normal((added, old.shape[1])).astype(np.float32) @ factor.T).astype(np.float32)


def resized_rows(
    weight: mx.array, new_num_tokens: int, mean_resizing: bool, std: float, seed: int | None = None
) -> mx.array:
    """`weight` [old, dim] cut to or extended to [new_num_tokens, dim] (old rows kept as they are)."""
    old_num = weight.shape[0]
    if new_num_tokens <= old_num:
        return weight[:new_num_tokens]
    rng = np.random.default_rng(seed)
    rows = _new_rows(np.array(weight.astype(mx.float32)), new_num_tokens - old_num, mean_resizing, std, rng)
    return mx.concatenate([weight, mx.array(rows).astype(weight.dtype)], axis=0)


def target_size(current: int, new_num_tokens: int | None, pad_to_multiple_of: int | None) -> int | None:
    """The new vocabulary size, rounded up to `pad_to_multiple_of` (None: nothing to do)."""
    if pad_to_multiple_of is not None:
        if isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
        wanted = current if new_num_tokens is None else new_num_tokens
        return -(-wanted // pad_to_multiple_of) * pad_to_multiple_of
    if new_num_tokens is not None and (isinstance(new_num_tokens, bool) or new_num_tokens < 1):
        raise ConfigError(f"new_num_tokens must be a positive integer, got {new_num_tokens!r}")
    return new_num_tokens


def resize_token_embeddings(
    model,
    new_num_tokens: int | None = None,
    pad_to_multiple_of: int | None = None,
    mean_resizing: bool = True,
    seed: int | None = None,
) -> nn.Module:
    """Resize the model's input embedding (and `lm_head`); update `config.vocab_size`; return the embedding."""
    base = model.base_model
    embed = base.embed_tokens
    if not isinstance(embed, nn.Embedding) or isinstance(embed, nn.QuantizedEmbedding):
        raise ConfigError(
            "resize_token_embeddings needs float embeddings: resize before quantizing "
            "(load the float checkpoint, resize, save, then `mlx-llama convert -q`)"
        )
    new = target_size(embed.weight.shape[0], new_num_tokens, pad_to_multiple_of)
    if new is None or new == embed.weight.shape[0]:
        return embed
    std = model.config.initializer_range
    embed.weight = resized_rows(embed.weight, new, mean_resizing, std, seed)
    if "lm_head" in model:
        if isinstance(model.lm_head, nn.QuantizedLinear):
            raise ConfigError("resize_token_embeddings cannot resize a quantized lm_head; resize before quantizing")
        model.lm_head.weight = resized_rows(
            model.lm_head.weight, new, mean_resizing, std, None if seed is None else seed + 1
        )
    model.config.vocab_size = new
    base.vocab_size = new
    mx.eval(model.parameters())
    return embed
