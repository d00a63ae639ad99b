"""Tiny random Transformers Llamas: the numerical oracle every model, generation and converter test reads."""

from __future__ import annotations

import numpy as np
import torch
import transformers

# The model-core preset: MHA, short context, any head class.
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
# The generation preset: GQA, Llama's special ids (bos 1, eos 2, no pad), room for long prompts.
GENERATION = {
    **TINY,
    "intermediate_size": 96,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": None,
}
# The converter preset: 8 heads so tensor-parallel shards split evenly; the FFN width Meta's formula gives.
HIDDEN, LAYERS, HEADS, MULTIPLE_OF = 64, 2, 8, 32
FFN = 192  # Meta's formula: 32 * ceil(int(8 * 64 / 3) / 32)
META = {
    **TINY,
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "intermediate_size": FFN,
    "num_attention_heads": HEADS,
    "max_position_embeddings": 2048,
}


def hf_config(**overrides) -> transformers.LlamaConfig:
    """A tiny Transformers LlamaConfig with eager attention (the exact reference path)."""
    return transformers.LlamaConfig(attn_implementation="eager", **{**TINY, **overrides})


def tiny_llama(
    config: dict,
    *,
    cls_name: str = "LlamaForCausalLM",
    seed: int = 0,
    random_norms: bool = True,
    bf16: bool = False,
    lm_head_scale: float | None = None,
):
    """A random float32 Transformers model of class `cls_name` in eval mode.

    random_norms: norm weights 1 + 0.1 N(0, 1), so a wrong or swapped norm cannot hide behind ones.
    bf16: every weight rounded through bfloat16 (what a bf16 checkpoint can hold).
    lm_head_scale: larger logits than the 0.02-std init, so greedy choices are not near-ties.
    """
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(transformers.LlamaConfig(attn_implementation="eager", **config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if random_norms and "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            if bf16:
                p.copy_(p.to(torch.bfloat16).float())
        if lm_head_scale is not None:
            model.lm_head.weight.mul_(lm_head_scale)
    return model


def hf_model(cls_name: str = "LlamaForCausalLM", seed: int = 0, **overrides):
    """The TINY preset with random norms."""
    return tiny_llama({**TINY, **overrides}, cls_name=cls_name, seed=seed)


def hf_tiny_model(vocab_size: int, seed: int = 0, **overrides):
    """The GENERATION preset: a causal LM with ones as norms and an 8x lm_head."""
    config = {**GENERATION, "vocab_size": vocab_size, **overrides}
    return tiny_llama(config, seed=seed, random_norms=False, lm_head_scale=8.0)


def hf_llama(vocab: int, kv_heads: int = HEADS, seed: int = 0, bf16: bool = True, eps: float = 1e-6, **kw):
    """The META preset: weights rounded through bfloat16 when `bf16` (what a bf16 Meta checkpoint holds)."""
    config = {**META, "vocab_size": vocab, "num_key_value_heads": kv_heads, "rms_norm_eps": eps, **kw}
    return tiny_llama(config, seed=seed, bf16=bf16)


def hf_logits(model, ids) -> np.ndarray:
    """The float32 logits of a Transformers model for integer ids of shape (batch, length)."""
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(ids))).logits.float().numpy()
