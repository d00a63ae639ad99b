"""The four task heads of Transformers' LLaMA, their output dataclasses and their losses (in float32)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..cache import KVCache
from ..config import LlamaConfig
from ..errors import InputError
from ..token_ids import check_ids
from .call_options import finish, logits_slice
from .llama import LlamaModel, as_array
from .pretrained import PreTrainedModel

IGNORE_INDEX = -100


@dataclass
class CausalLMOutputWithPast:
    loss: mx.array | None = None
    logits: mx.array | None = None
    past_key_values: list[KVCache] | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class SequenceClassifierOutputWithPast:
    loss: mx.array | None = None
    logits: mx.array | None = None
    past_key_values: list[KVCache] | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class QuestionAnsweringModelOutput:
    loss: mx.array | None = None
    start_logits: mx.array | None = None
    end_logits: mx.array | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class TokenClassifierOutput:
    loss: mx.array | None = None
    logits: mx.array | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


# ---- losses (Transformers' loss_utils semantics) -------------------------------------------------------------

def cross_entropy(logits: mx.array, targets: mx.array, ignore_index: int = IGNORE_INDEX,
                  num_items_in_batch: int | None = None) -> mx.array:
    """Mean over non-ignored targets (NaN when all are ignored), or sum / num_items_in_batch."""
    targets = targets.astype(mx.int32)
    keep = targets != ignore_index
    safe = mx.where(keep, targets, 0)
    picked = mx.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    losses = (mx.logsumexp(logits, axis=-1) - picked) * keep
    if num_items_in_batch is not None:
        return losses.sum() / num_items_in_batch
    return losses.sum() / keep.sum()


def causal_lm_loss(logits: mx.array, labels: Any, ignore_index: int = IGNORE_INDEX,
                   num_items_in_batch: int | None = None) -> mx.array:
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


def _labels(labels: Any, shape: tuple[int, ...], what: str) -> mx.array:
    """Integer labels of exactly `shape` (those of the logits they score), or InputError."""
    try:
        labels = as_array(labels)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what} must be an integer array ({exc})") from None
    if tuple(labels.shape) != tuple(shape) or not mx.issubdtype(labels.dtype, mx.integer):
        raise InputError(f"{what} must be integers of shape {list(shape)} (as input_ids), got "
                         f"{labels.dtype} {list(labels.shape)}")
    return labels.astype(mx.int32)


# ---- heads ---------------------------------------------------------------------------------------------------

class LlamaForCausalLM(PreTrainedModel):
    """Decoder + language-model head (`lm_head`, or the input embedding when `tie_word_embeddings`)."""

    base_model_class = LlamaModel

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        if not self.output_embedding_shared():
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
                 past_key_values: list[KVCache] | None = None, inputs_embeds: Any = None, labels: Any = None,
                 use_cache: bool | None = None, output_attentions: bool = False, output_hidden_states: bool = False,
                 logits_to_keep: Any = 0, num_items_in_batch: int | None = None, cache_position: Any = None,
                 return_dict: bool | None = None, num_logits_to_keep: int | None = None) -> CausalLMOutputWithPast:
        """Logits for the last `logits_to_keep` positions (0 = all); the shifted LM loss when `labels` are given."""
        out = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
                         output_attentions, output_hidden_states, cache_position)
        h = logits_slice(out.last_hidden_state, logits_to_keep, num_logits_to_keep)
        logits = self.lm_head(h) if "lm_head" in self else self.model.embed_tokens.as_linear(h)
        loss = None
        if labels is not None:
            labels = _labels(labels, logits.shape[:2], "labels")
            loss = causal_lm_loss(logits, labels, num_items_in_batch=num_items_in_batch)
        return finish(CausalLMOutputWithPast(loss, logits, out.past_key_values, out.hidden_states, out.attentions),
                      return_dict)


class LlamaForSequenceClassification(PreTrainedModel):
    """Scores the rightmost non-pad token (Transformers 4.57 pooling); `score` has no bias."""

    base_model_class = LlamaModel

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def pooling_index(self, input_ids: mx.array | None, batch: int, T: int) -> mx.array:
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined (set config.pad_token_id)")
        if pad is None:
            return mx.full((batch,), T - 1, mx.int32)
        if input_ids is None:
            warnings.warn("padding cannot be detected with inputs_embeds: pooling the last position", stacklevel=3)
            return mx.full((batch,), T - 1, mx.int32)
        non_pad = (input_ids != pad).astype(mx.int32)
        return mx.argmax(mx.arange(T) * non_pad, axis=-1).astype(mx.int32)

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
                 past_key_values: list[KVCache] | None = None, inputs_embeds: Any = None, labels: Any = None,
                 use_cache: bool | None = None, output_attentions: bool = False,
                 output_hidden_states: bool = False, cache_position: Any = None,
                 return_dict: bool | None = None) -> SequenceClassifierOutputWithPast:
        input_ids = None if input_ids is None else check_ids(input_ids, self.config.vocab_size)
        out = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
                         output_attentions, output_hidden_states, cache_position)
        logits = self.score(out.last_hidden_state)
        B, T = logits.shape[:2]
        idx = self.pooling_index(input_ids, B, T)
        pooled = logits[mx.arange(B), idx]
        loss = None if labels is None else sequence_classification_loss(pooled, labels, self.config)
        return finish(SequenceClassifierOutputWithPast(loss, pooled, out.past_key_values, out.hidden_states,
                                                       out.attentions), return_dict)


class LlamaForQuestionAnswering(PreTrainedModel):
    """Span extraction: start/end logits per token. The base model lives under `transformer`, as in Transformers."""

    base_model_class = LlamaModel
    base_model_prefix = "transformer"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.transformer = self.base_model_class(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
                 inputs_embeds: Any = None, start_positions: Any = None, end_positions: Any = None,
                 output_attentions: bool = False, output_hidden_states: bool = False,
                 return_dict: bool | None = None) -> QuestionAnsweringModelOutput:
        out = self.transformer(input_ids, attention_mask, position_ids, None, inputs_embeds, False,
                               output_attentions, output_hidden_states)
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            T = start_logits.shape[1]

            def span_loss(span_logits: mx.array, positions: Any) -> mx.array:
                # Out-of-range positions are clamped to T and ignored; negative ones become 0 (Transformers).
                positions = mx.clip(as_array(positions, mx.int32).reshape(-1), 0, T)
                return cross_entropy(span_logits.astype(mx.float32), positions, ignore_index=T)

            loss = (span_loss(start_logits, start_positions) + span_loss(end_logits, end_positions)) / 2
        return finish(QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions),
                      return_dict)


class LlamaForTokenClassification(PreTrainedModel):
    """Per-token labels; dropout before `score` (0.1 unless the config sets classifier/hidden dropout)."""

    base_model_class = LlamaModel

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        p = config.extra.get("classifier_dropout")
        if p is None:
            p = config.extra.get("hidden_dropout")
        self.dropout = nn.Dropout(0.1 if p is None else p)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
                 inputs_embeds: Any = None, labels: Any = None, output_attentions: bool = False,
                 output_hidden_states: bool = False, return_dict: bool | None = None) -> TokenClassifierOutput:
        out = self.model(input_ids, attention_mask, position_ids, None, inputs_embeds, False,
                         output_attentions, output_hidden_states)
        logits = self.score(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            flat = logits.reshape(-1, self.config.num_labels).astype(mx.float32)
            loss = cross_entropy(flat, _labels(labels, logits.shape[:2], "labels").reshape(-1))
        return finish(TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions), return_dict)
