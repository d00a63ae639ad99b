"""The four task heads of Transformers' LLaMA (outputs in outputs.py, losses in losses.py)."""

from __future__ import annotations

import warnings
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..cache import KVCache
from ..config import LlamaConfig
from ..errors import InputError
from ..token_ids import check_ids
from .call_options import finish, logits_slice
from .cpu_linear import Linear
from .llama import LlamaModel, as_array
from .losses import causal_lm_loss, cross_entropy, sequence_classification_loss, span_loss
from .outputs import (
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from .pretrained import PreTrainedModel


def _labels(labels: Any, shape: tuple[int, ...], what: str) -> mx.array:
    """Integer labels of exactly `shape` (those of the logits they score), or InputError."""
    try:
        labels = as_array(labels)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what} must be an integer array ({exc})") from None
    if tuple(labels.shape) != tuple(shape) or not mx.issubdtype(labels.dtype, mx.integer):
        raise InputError(
            f"{what} must be integers of shape {list(shape)} (as input_ids), got {labels.dtype} {list(labels.shape)}"
        )
    return labels.astype(mx.int32)


# ---- heads ---------------------------------------------------------------------------------------------------


class LlamaForCausalLM(PreTrainedModel):
    """Decoder + language-model head (`lm_head`, or the input embedding when `tie_word_embeddings`)."""

    base_model_class = LlamaModel

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        if not self.output_embedding_shared():
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: list[KVCache] | None = None,
        inputs_embeds: Any = None,
        labels: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        logits_to_keep: Any = 0,
        num_items_in_batch: int | None = None,
        cache_position: Any = None,
        return_dict: bool | None = None,
        num_logits_to_keep: int | None = None,
    ) -> CausalLMOutputWithPast:
        """Logits for the last `logits_to_keep` positions (0 = all); the shifted LM loss when `labels` are given."""
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            cache_position=cache_position,
        )
        h = logits_slice(out.last_hidden_state, logits_to_keep, num_logits_to_keep)
        logits = self.lm_head(h) if "lm_head" in self else self.model.embed_tokens.as_linear(h)
        loss = None
        if labels is not None:
            labels = _labels(labels, logits.shape[:2], "labels")
            loss = causal_lm_loss(logits, labels, num_items_in_batch=num_items_in_batch)
        return finish(
            CausalLMOutputWithPast(loss, logits, out.past_key_values, out.hidden_states, out.attentions), return_dict
        )


class LlamaForSequenceClassification(PreTrainedModel):
    """Scores the rightmost non-pad token (Transformers 4.57 pooling); `score` has no bias."""

    base_model_class = LlamaModel

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.score = Linear(config.hidden_size, config.num_labels, bias=False)
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

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: list[KVCache] | None = None,
        inputs_embeds: Any = None,
        labels: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        cache_position: Any = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutputWithPast:
        input_ids = None if input_ids is None else check_ids(input_ids, self.config.vocab_size)
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            cache_position=cache_position,
        )
        logits = self.score(out.last_hidden_state)
        B, T = logits.shape[:2]
        idx = self.pooling_index(input_ids, B, T)
        pooled = logits[mx.arange(B), idx]
        loss = None if labels is None else sequence_classification_loss(pooled, labels, self.config)
        return finish(
            SequenceClassifierOutputWithPast(loss, pooled, out.past_key_values, out.hidden_states, out.attentions),
            return_dict,
        )


class LlamaForQuestionAnswering(PreTrainedModel):
    """Span extraction: start/end logits per token. The base model lives under `transformer`, as in Transformers."""

    base_model_class = LlamaModel
    base_model_prefix = "transformer"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.transformer = self.base_model_class(config)
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.post_init()

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        start_positions: Any = None,
        end_positions: Any = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput:
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (span_loss(start_logits, start_positions) + span_loss(end_logits, end_positions)) / 2
        return finish(
            QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions), return_dict
        )


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
        self.score = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        labels: Any = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput:
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.score(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            flat = logits.reshape(-1, self.config.num_labels).astype(mx.float32)
            loss = cross_entropy(flat, _labels(labels, logits.shape[:2], "labels").reshape(-1))
        return finish(TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions), return_dict)
