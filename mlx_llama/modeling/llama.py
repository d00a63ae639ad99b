"""The LLaMA decoder with Transformers' module and attribute names, so its state dicts load without renaming.

Fast path: `mx.fast.rms_norm`, `mx.fast.rope` and `mx.fast.scaled_dot_product_attention` (GQA with K/V
untiled). Attention probabilities are materialised only when asked for (`output_attentions`) or when
attention dropout is active in training, which is the slower unfused path.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..cache import KVCache
from ..config import LlamaConfig
from ..errors import InputError
from ..rope import RotaryEmbedding
from ..token_ids import check_ids
from .call_options import check_past_key_values, finish, positions_from_cache_position
from .cpu_linear import Linear
from .outputs import BaseModelOutputWithPast
from .pretrained import PreTrainedModel


def _gelu_tanh(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACT2FN = {
    "silu": nn.silu,
    "swish": nn.silu,
    "gelu": nn.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "quick_gelu": lambda x: x * mx.sigmoid(1.702 * x),
    "relu": nn.relu,
}


def as_array(x: Any, dtype: mx.Dtype | None = None) -> mx.array | None:
    """Accept mx.array, numpy arrays and (nested) lists wherever Transformers takes a tensor."""
    if x is None:
        return None
    if not isinstance(x, mx.array):
        if isinstance(x, (str, bytes)):
            raise InputError(f"expected an array, got text {x[:40]!r}")
        try:
            x = mx.array(np.asarray(x))
        except (ValueError, TypeError) as exc:
            raise InputError(f"expected a rectangular numeric array ({exc})") from None
    return x if dtype is None or x.dtype == dtype else x.astype(dtype)


class LlamaRMSNorm(nn.Module):
    """RMSNorm as Transformers: normalise in float32, cast back, then multiply by the weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = mx.ones((hidden_size,))
        self.variance_epsilon = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.weight, self.variance_epsilon)


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        bias = config.attention_bias
        hidden = config.hidden_size
        self.q_proj = Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(hidden, self.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(hidden, self.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, hidden, bias=bias)
        self.attention_dropout = nn.Dropout(config.attention_dropout)
        self.dropout_p = config.attention_dropout

    def __call__(
        self,
        x: mx.array,
        positions: Positions,
        mask: mx.array | str | None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        B, T, _ = x.shape
        if "qkv_proj" in self:  # fused at load time (modeling/fused.py)
            n_q = self.num_heads * self.head_dim
            q, k, v = mx.split(self.qkv_proj(x), [n_q, n_q + self.num_key_value_heads * self.head_dim], axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = k.reshape(B, T, self.num_key_value_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = v.reshape(B, T, self.num_key_value_heads, self.head_dim).transpose(0, 2, 1, 3)
        q, k = positions.apply(q), positions.apply(k)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        if output_attentions or (self.training and self.dropout_p > 0):
            out, weights = self._eager(q, k, v, mask)
        else:
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scaling, mask=mask)
            weights = None
        out = out.transpose(0, 2, 1, 3).reshape(B, T, -1)
        return self.o_proj(out), weights

    def _eager(self, q: mx.array, k: mx.array, v: mx.array, mask: mx.array | str | None) -> tuple[mx.array, mx.array]:
        """Explicit softmax(q k^T) v, grouping query heads per KV head instead of tiling K/V."""
        B, H, T, D = q.shape
        S, kv = k.shape[2], self.num_key_value_heads
        qg = q.reshape(B, kv, H // kv, T, D)
        scores = (qg * self.scaling) @ k[:, :, None].swapaxes(-1, -2)
        scores = scores.reshape(B, H, T, S)
        if isinstance(mask, str):
            mask = causal_mask(T, S - T)
        if mask is not None:
            if mask.dtype == mx.bool_:
                scores = mx.where(mask, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
            else:
                scores = scores + mask.astype(scores.dtype)
        weights = mx.softmax(scores.astype(mx.float32), axis=-1).astype(q.dtype)
        dropped = self.attention_dropout(weights)
        out = (dropped.reshape(B, kv, H // kv, T, S) @ v[:, :, None]).reshape(B, H, T, v.shape[-1])
        return out, weights


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        hidden, inter, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = Linear(hidden, inter, bias=bias)
        self.up_proj = Linear(hidden, inter, bias=bias)
        self.down_proj = Linear(inter, hidden, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def __call__(self, x: mx.array) -> mx.array:
        if "gate_up_proj" in self:  # fused at load time (modeling/fused.py)
            gate, up = mx.split(self.gate_up_proj(x), 2, axis=-1)
            return self.down_proj(self.act_fn(gate) * up)
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer_idx: int = 0, mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = mlp if mlp is not None else LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def __call__(
        self,
        x: mx.array,
        positions: Positions,
        mask: mx.array | str | None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[mx.array, mx.array | None]:
        h, weights = self.self_attn(self.input_layernorm(x), positions, mask, cache, output_attentions)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class Positions:
    """Where the tokens of one forward sit: a shared/per-row offset (fused rope) or explicit position ids."""

    def __init__(self, rope: RotaryEmbedding, offset: int | mx.array = 0, position_ids: mx.array | None = None):
        self.rope, self.offset, self.position_ids = rope, offset, position_ids

    def apply(self, x: mx.array) -> mx.array:
        if self.position_ids is not None:
            return self.rope.apply_positions(x, self.position_ids)
        return self.rope(x, self.offset)


def causal_mask(T: int, past: int) -> mx.array:
    """Boolean [T, past+T] mask: query t (absolute position past+t) sees keys 0..past+t."""
    return mx.arange(past + T)[None, :] <= (mx.arange(T) + past)[:, None]


def padding_causal_mask(mask2d: mx.array, T: int, past: int, dtype: mx.Dtype = mx.float32) -> mx.array:
    """Additive [B, 1, T, past+T] mask (0 keep, finfo.min masked) from a 2D padding mask, as Transformers' eager.

    A query that can see no key (a left-pad token) gets finfo.min on every key; scores + min round to min,
    so its softmax is uniform over all keys, exactly as in Transformers. A right-pad query sees the valid
    keys before it and not itself. Every row stays finite, so nothing leaks into valid rows.
    """
    kv_len = past + T
    mask2d = mask2d.astype(mx.bool_)
    if mask2d.shape[1] < kv_len:
        mask2d = mx.pad(mask2d, [(0, 0), (0, kv_len - mask2d.shape[1])], constant_values=False)
    mask2d = mask2d[:, :kv_len]
    kv_idx = mx.arange(kv_len)[None, :]
    q_pos = (mx.arange(T) + past)[:, None]
    allowed = (kv_idx <= q_pos)[None] & mask2d[:, None, :]
    return mx.where(allowed, mx.array(0, dtype), mx.array(mx.finfo(dtype).min, dtype))[:, None]


class LlamaModel(PreTrainedModel):
    """The bare decoder: embeddings, layers, final norm. Returns the last hidden state."""

    base_model_prefix = ""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [self._make_layer(config, i) for i in range(config.num_hidden_layers)]
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.max_position_embeddings, config.rope_scaling, config.extra
        )
        self.post_init()

    def _make_layer(self, config: LlamaConfig, layer_idx: int) -> nn.Module:
        return LlamaDecoderLayer(config, layer_idx)

    def embed(self, input_ids: mx.array) -> mx.array:
        """Token lookup; in training the padding row gets no gradient, as torch's `padding_idx` does."""
        if self.training and self.padding_idx is not None and isinstance(self.embed_tokens, nn.Embedding):
            weight = self.embed_tokens.weight
            is_pad = (mx.arange(weight.shape[0]) == self.padding_idx)[:, None]
            return mx.where(is_pad, mx.stop_gradient(weight), weight)[input_ids]
        return self.embed_tokens(input_ids)

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: list[KVCache] | None = None,
        inputs_embeds: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        cache_position: Any = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPast:
        """Run the decoder. A 2D `attention_mask` is a padding mask [B, past+T] (1 keep); a 4D one is additive."""
        check_past_key_values(past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            h = self.embed(check_ids(input_ids, self.vocab_size))
        else:
            h = as_array(inputs_embeds)
            if h.ndim != 3 or h.shape[-1] != self.config.hidden_size:
                raise InputError(
                    f"inputs_embeds must be [batch, length, {self.config.hidden_size}], got shape {list(h.shape)}"
                )
        h = self.after_embedding(h, from_ids=inputs_embeds is None)
        B, T = h.shape[:2]
        if use_cache is None:
            use_cache = self.config.use_cache
        if past_key_values is None and use_cache:
            past_key_values = self.make_cache()
        past = past_key_values[0].offset if past_key_values else 0
        positions_from_cache_position(cache_position, position_ids, past, T)
        positions = self.positions(position_ids, past, T)
        mask = self.build_mask(attention_mask, B, T, past, h.dtype)

        hidden_states, attentions = ([h] if output_hidden_states else None), ([] if output_attentions else None)
        caches = past_key_values or [None] * len(self.layers)
        for layer, cache in zip(self.layers, caches):
            h, weights = layer(h, positions, mask, cache, output_attentions)
            if output_hidden_states:
                hidden_states.append(h)
            if output_attentions:
                attentions.append(weights)
        h = self.norm(h)
        if output_hidden_states:  # Transformers reports the final norm's output in place of the last layer's
            hidden_states[-1] = h
        return finish(
            BaseModelOutputWithPast(
                last_hidden_state=h,
                past_key_values=past_key_values if use_cache else None,
                hidden_states=tuple(hidden_states) if output_hidden_states else None,
                attentions=tuple(attentions) if output_attentions else None,
            ),
            return_dict,
        )

    def after_embedding(self, h: mx.array, from_ids: bool) -> mx.array:
        """Hook for variants that transform the embeddings (Open-Llama's stable embedding)."""
        return h

    def positions(self, position_ids: Any, past: int, T: int) -> Positions:
        """Pick the fused rope (shared or per-row offsets) when positions are contiguous, else explicit ids.

        Also advances stateful rope types (dynamic NTK, longrope) to this forward's largest position.
        """
        rope = self.rotary_emb
        if position_ids is None:
            rope.update(past + T)
            return Positions(rope, past)
        if isinstance(position_ids, mx.array) and T == 1 and rope.rope_type not in ("dynamic", "longrope"):
            return Positions(rope, position_ids.reshape(-1).astype(mx.int32))  # no host sync per decode step
        try:
            ids = np.asarray(position_ids).astype(np.int64).reshape(-1, T)
        except (ValueError, TypeError) as exc:
            raise InputError(f"position_ids must be integers of shape [batch, {T}] ({exc})") from None
        rope.update(int(ids.max()) + 1)
        starts = ids[:, :1]
        if np.array_equal(ids - starts, np.broadcast_to(np.arange(T), ids.shape)):
            if (starts == starts[0]).all():
                return Positions(rope, int(starts[0, 0]))
            return Positions(rope, mx.array(starts[:, 0].astype(np.int32)))
        return Positions(rope, position_ids=mx.array(ids.astype(np.int32)))

    def build_mask(self, attention_mask: Any, B: int, T: int, past: int, dtype: mx.Dtype) -> mx.array | str | None:
        """None / "causal" for the fused kernel when nothing is padded, else an explicit mask."""
        if attention_mask is not None:
            attention_mask = as_array(attention_mask)
            shape = tuple(attention_mask.shape)
            if attention_mask.ndim == 4:  # used as given: additive (0 / large negative) or boolean
                if shape[0] not in (1, B) or shape[1] < 1 or shape[2:] != (T, past + T):
                    raise InputError(f"a 4D attention_mask must be [{B}, heads, {T}, {past + T}], got {list(shape)}")
                return attention_mask if attention_mask.dtype == mx.bool_ else attention_mask.astype(dtype)
            if attention_mask.ndim != 2 or shape != (B, past + T):
                raise InputError(
                    f"attention_mask must be [batch, past + length] = [{B}, {past + T}] (or 4D), "
                    f"got shape {list(shape)}"
                )
            if attention_mask.shape[1] < past + T or not mx.all(attention_mask[:, : past + T]).item():
                return padding_causal_mask(attention_mask, T, past, dtype)
        return "causal" if T > 1 else None
