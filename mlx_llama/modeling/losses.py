"""The heads' losses, with Transformers' loss_utils semantics (computed in float32 where logits may be half)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from ..config import LlamaConfig
from .llama import as_array

IGNORE_INDEX = -100


def cross_entropy(
    logits: mx.array, targets: mx.array, ignore_index: int = IGNORE_INDEX, num_items_in_batch: int | None = None
) -> mx.array:
    """Mean over non-ignored targets (NaN when all are ignored), or sum / num_items_in_batch."""
    targets = targets.astype(mx.int32)
    keep = targets != ignore_index
    safe = mx.where(keep, targets, 0)
    picked = mx.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    losses = (mx.logsumexp(logits, axis=-1) - picked) * keep
    if num_items_in_batch is not None:
        return losses.sum() / num_items_in_batch
    return losses.sum() / keep.sum()


def causal_lm_loss(
    logits: mx.array, labels: Any, ignore_index: int = IGNORE_INDEX, num_items_in_batch: int | None = None
) -> mx.array:
    """Next-token loss: logits at t predict labels at t+1; computed in float32."""
    labels = as_array(labels, mx.int32)
    shift_logits = logits[:, :-1].astype(mx.float32).reshape(-1, logits.shape[-1])
    return cross_entropy(shift_logits, labels[:, 1:].reshape(-1), ignore_index, num_items_in_batch)


def mse_loss(pred: mx.array, target: mx.array) -> mx.array:
    return mx.mean(mx.square(pred - target))


def bce_with_logits(logits: mx.array, target: mx.array) -> mx.array:
    """Numerically stable mean binary cross-entropy on logits."""
    return mx.mean(mx.maximum(logits, 0) - logits * target + mx.log1p(mx.exp(-mx.abs(logits))))


def sequence_classification_loss(pooled: mx.array, labels: Any, config: LlamaConfig) -> mx.array:
    """Regression / single-label / multi-label, with `problem_type` inferred once and written into the config."""
    labels = as_array(labels)
    n = config.num_labels
    if config.problem_type is None:
        if n == 1:
            config.problem_type = "regression"
        elif n > 1 and labels.dtype in (mx.int32, mx.int64, mx.int16, mx.int8, mx.uint8, mx.uint32, mx.uint64):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        labels = labels.astype(pooled.dtype)
        if n == 1:
            return mse_loss(pooled.squeeze(), labels.squeeze())
        return mse_loss(pooled, labels)
    if config.problem_type == "single_label_classification":
        return cross_entropy(pooled.reshape(-1, n), labels.reshape(-1))
    return bce_with_logits(pooled, labels.astype(pooled.dtype))


def span_loss(span_logits: mx.array, positions: Any) -> mx.array:
    """Question answering: out-of-range positions are clamped to T and ignored; negative ones become 0."""
    T = span_logits.shape[1]
    positions = mx.clip(as_array(positions, mx.int32).reshape(-1), 0, T)
    return cross_entropy(span_logits.astype(mx.float32), positions, ignore_index=T)
