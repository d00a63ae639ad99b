"""Open-Llama: only what it does differently from LLaMA, as small subclasses of the LLaMA classes.

The differences (Transformers' deprecated `open_llama`, eager path, which is what runs without xformers):
a LayerNorm after the token lookup ("stable embedding"), the input embedding optionally used as the output
projection, dropout on the MLP output, a 4D mask that means 1 = attend, dynamic NTK rope driven by the
cache length and never reset, and the older "token before the first pad" pooling for classification.
Weight names are Transformers' open_llama names, so its checkpoints load unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..open_llama_config import OpenLlamaConfig
from ..rope import RotaryEmbedding
from .heads import LlamaForCausalLM, LlamaForSequenceClassification
from .llama import LlamaDecoderLayer, LlamaMLP, LlamaModel, Positions, as_array


class OpenLlamaMLP(LlamaMLP):
    """The LLaMA MLP followed by dropout (`hidden_dropout_prob`, active in training only)."""

    def __init__(self, config: OpenLlamaConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def __call__(self, x: mx.array) -> mx.array:
        return self.dropout(super().__call__(x))


class OpenLlamaRotaryEmbedding(RotaryEmbedding):
    """Open-Llama's rope: linear as LLaMA's; dynamic NTK sized by past + T (not by the position ids).

    Its frequency table only ever grows: once a forward went past `max_position_embeddings`, the
    enlarged base stays for every later, shorter forward (LLaMA's dynamic rope resets instead).
    """

    def update(self, seq_len: int) -> None:
        """Position-driven updates do not apply to Open-Llama; `grow` is called with the cache length."""

    def grow(self, kv_len: int) -> None:
        if self.rope_type == "dynamic" and kv_len > self.max_seq_len_cached:
            super().update(kv_len)  # the same NTK base formula as LLaMA's, for a longer table


class OpenLlamaModel(LlamaModel):
    """The LLaMA decoder with Open-Llama's embedding LayerNorm, MLP dropout, rope and mask conventions."""

    config_class = OpenLlamaConfig  # so that from_pretrained reads config.json with Open-Llama's fields

    def __init__(self, config: OpenLlamaConfig) -> None:
        super().__init__(config)
        if config.use_stable_embedding:
            self.embed_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-5)  # torch's default eps, with bias
        self.rotary_emb = OpenLlamaRotaryEmbedding(
            config.head_dim, config.rope_theta, config.max_position_embeddings, config.rope_scaling, config.extra
        )

    def _make_layer(self, config: OpenLlamaConfig, layer_idx: int) -> nn.Module:
        return LlamaDecoderLayer(config, layer_idx, mlp=OpenLlamaMLP(config))

    def after_embedding(self, h: mx.array, from_ids: bool) -> mx.array:
        """Stable embedding: normalise looked-up tokens; user-given `inputs_embeds` are used as they are."""
        if from_ids and "embed_layer_norm" in self:
            return self.embed_layer_norm(h)
        return h

    def positions(self, position_ids: Any, past: int, T: int) -> Positions:
        self.rotary_emb.grow(past + T)
        return super().positions(position_ids, past, T)

    def build_mask(self, attention_mask: Any, B: int, T: int, past: int, dtype: mx.Dtype) -> mx.array | str | None:
        """As LLaMA, except: a 4D mask is 1 = attend (inverted to additive), and, as in Transformers, training
        with `use_memory_efficient_attention` uses the causal mask alone (padding is not masked)."""
        if self.training and self.config.use_memory_efficient_attention:
            attention_mask = None
        elif attention_mask is not None:
            attention_mask = as_array(attention_mask)
            if attention_mask.ndim == 4:
                expected = (B, 1, T, past + T)
                if tuple(attention_mask.shape) != expected:
                    raise ValueError(
                        f"Incorrect 4D attention_mask shape: {tuple(attention_mask.shape)}; "
                        f"expected: {expected} (1 = attend, 0 = masked)"
                    )
                keep = attention_mask if attention_mask.dtype == mx.bool_ else attention_mask == 1
                return mx.where(keep, mx.array(0, dtype), mx.array(mx.finfo(dtype).min, dtype))
        return super().build_mask(attention_mask, B, T, past, dtype)


class OpenLlamaPreTrainedModel:
    """Mixin for the Open-Llama heads: config and base classes, and Transformers' embedding init."""

    config_class = OpenLlamaConfig
    base_model_class = OpenLlamaModel

    def post_init(self) -> None:
        """Xavier-normal token embeddings with a stable embedding (normal(0, std) otherwise); pad row zero."""
        super().post_init()
        config = self.config
        if config.use_stable_embedding:
            embed = self.base_model.embed_tokens
            vocab, hidden = embed.weight.shape
            embed.weight = mx.random.normal((vocab, hidden)) * math.sqrt(2.0 / (vocab + hidden))
            if config.pad_token_id is not None and 0 <= config.pad_token_id < vocab:
                embed.weight[config.pad_token_id] = 0


class OpenLlamaForCausalLM(OpenLlamaPreTrainedModel, LlamaForCausalLM):
    """Decoder + LM head; with `shared_input_output_embedding` (the default) the logits are h @ embed^T.

    The loss is computed in float32 (Transformers' Open-Llama keeps the model dtype): identical in
    float32, more accurate in half precision.
    """

    def output_embedding_shared(self) -> bool:
        return bool(self.config.shared_input_output_embedding or self.config.tie_word_embeddings)


class OpenLlamaForSequenceClassification(OpenLlamaPreTrainedModel, LlamaForSequenceClassification):
    """Scores the token before the first pad (the legacy rule; the last token when no pad is present)."""

    def pooling_index(self, input_ids: mx.array | None, batch: int, T: int) -> mx.array:
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined (set config.pad_token_id)")
        if pad is None or input_ids is None:
            return mx.full((batch,), T - 1, mx.int32)
        first_pad = mx.argmax((input_ids == pad).astype(mx.int32), axis=-1).astype(mx.int32)  # argmax is unsigned
        return (first_pad - 1) % T
