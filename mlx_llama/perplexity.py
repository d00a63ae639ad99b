"""Perplexity: exp(mean next-token NLL) over consecutive non-overlapping windows of the encoded text.

Each window of `context_length` tokens is scored on its own (no carried-over context), so its first token is
not predicted: a window of L tokens contributes L - 1 predictions. A shorter last window (>= 2 tokens) counts.
Log-probabilities are taken in float32 whatever the compute dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mlx.core as mx

from .errors import ConfigError


def window_nll(model, window: Sequence[int], cache_options: dict | None = None) -> tuple[float, int]:
    """(summed NLL, number of predictions) for one window, run through a fresh KV cache."""
    ids = mx.array([list(window)], dtype=mx.int32)
    cache = model.make_cache(**cache_options) if cache_options else model.make_cache()
    logits = model(ids, past_key_values=cache, use_cache=True).logits[0, :-1].astype(mx.float32)
    targets = ids[0, 1:]
    nll = mx.logsumexp(logits, axis=-1) - mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return float(nll.sum().item()), int(targets.shape[0])


def perplexity(
    model,
    tokenizer,
    text: str,
    context_length: int = 256,
    *,
    add_special_tokens: bool = True,
    cache_options: dict | None = None,
    progress=None,
) -> float:
    """exp(mean NLL) of `tokenizer.encode(text)` scored in windows of `context_length` tokens.

    `cache_options` (e.g. {"kv_bits": 4}) score through a quantized or rotating KV cache, to measure its cost.
    """
    if context_length < 2:
        raise ConfigError(f"context_length must be at least 2 (a window predicts L - 1 tokens), got {context_length}")
    ids = list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
    if len(ids) < 2:
        raise ConfigError(f"the text encodes to {len(ids)} token(s); perplexity needs at least 2")
    total, count = 0.0, 0
    starts = range(0, len(ids), context_length)
    for i, start in enumerate(starts):
        window = ids[start : start + context_length]
        if len(window) < 2:
            break
        nll, n = window_nll(model, window, cache_options)
        total, count = total + nll, count + n
        if progress is not None:
            progress(i + 1, len(starts))
    return math.exp(total / count)
