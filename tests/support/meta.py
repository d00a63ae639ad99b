"""Original Meta checkpoints for the converter tests, written by code independent of mlx_llama (its own inverse
q/k permutation and tensor-parallel split, saved by torch), and the byte-fallback tokenizer they ship with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from .hf_llama import MULTIPLE_OF
from .spm import train_spm

_WORDS = (
    "the quick brown fox jumps over lazy dog llama model weight shard tensor merge convert float half "
    "bfloat quantize group scale bias token piece sentence rotary head query key value output norm layer"
).split()


def train_tokenizer(directory: Path, vocab_size: int = 320) -> Path:
    """A tiny byte-fallback BPE sentencepiece model with LLaMA's special ids (unk 0, bos 1, eos 2)."""
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(_WORDS, size=12)) for _ in range(400)]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tok.model"
    path.write_bytes(train_spm(lines, vocab_size, byte_fallback=True, character_coverage=1.0))
    return path


def _to_meta_qk(w: torch.Tensor, n: int) -> torch.Tensor:
    """Undo Transformers' rotate-half row order: per head, rows [first half; second half] -> interleaved."""
    rows, cols = w.shape
    return w.reshape(n, 2, rows // n // 2, cols).transpose(1, 2).reshape(rows, cols)


def meta_state(model, embed_axis: int = 1) -> dict[str, tuple[torch.Tensor, int | None]]:
    """Meta's name for each tensor of a Transformers Llama, with the axis its tensor-parallel shards split
    (None: replicated). The embedding splits over hidden (LLaMA 1/2, axis 1) or over the vocabulary (Llama 3, 0)."""
    cfg = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    meta: dict[str, tuple[torch.Tensor, int | None]] = {
        "tok_embeddings.weight": (sd["model.embed_tokens.weight"], embed_axis),
        "norm.weight": (sd["model.norm.weight"], None),
        "output.weight": (sd["lm_head.weight"], 0),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        meta[f"layers.{i}.attention.wq.weight"] = (
            _to_meta_qk(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads),
            0,
        )
        meta[f"layers.{i}.attention.wk.weight"] = (
            _to_meta_qk(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads),
            0,
        )
        meta[f"layers.{i}.attention.wv.weight"] = (sd[p + "self_attn.v_proj.weight"], 0)
        meta[f"layers.{i}.attention.wo.weight"] = (sd[p + "self_attn.o_proj.weight"], 1)
        meta[f"layers.{i}.feed_forward.w1.weight"] = (sd[p + "mlp.gate_proj.weight"], 0)
        meta[f"layers.{i}.feed_forward.w2.weight"] = (sd[p + "mlp.down_proj.weight"], 1)
        meta[f"layers.{i}.feed_forward.w3.weight"] = (sd[p + "mlp.up_proj.weight"], 0)
        meta[f"layers.{i}.attention_norm.weight"] = (sd[p + "input_layernorm.weight"], None)
        meta[f"layers.{i}.ffn_norm.weight"] = (sd[p + "post_attention_layernorm.weight"], None)
    return meta


def write_meta(model, directory: Path, n_shards: int, tokenizer: Path | None, norm_eps: float = 1e-6) -> Path:
    """Save `model` as consolidated.NN.pth bf16 shards, each shard's tensors views of one shared storage."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    meta = meta_state(model)
    for s in range(n_shards):
        parts = {
            name: (t if axis is None else torch.chunk(t, n_shards, dim=axis)[s]).to(torch.bfloat16)
            for name, (t, axis) in meta.items()
        }
        flat = torch.empty(sum(t.numel() for t in parts.values()), dtype=torch.bfloat16)
        shard, offset = {}, 0
        for name, t in parts.items():
            view = flat[offset : offset + t.numel()].view(t.shape)
            view.copy_(t)
            shard[name] = view
            offset += t.numel()
        shard["rope.freqs"] = torch.arange(cfg.hidden_size // cfg.num_attention_heads // 2, dtype=torch.float32)
        torch.save(shard, directory / f"consolidated.{s:02d}.pth")
    params = {
        "dim": cfg.hidden_size,
        "n_layers": cfg.num_hidden_layers,
        "n_heads": cfg.num_attention_heads,
        "multiple_of": MULTIPLE_OF,
        "norm_eps": norm_eps,
        "vocab_size": -1,
    }
    if cfg.num_key_value_heads != cfg.num_attention_heads:
        params["n_kv_heads"] = cfg.num_key_value_heads
    (directory / "params.json").write_text(json.dumps(params))
    if tokenizer is not None:
        shutil.copyfile(tokenizer, directory / "tokenizer.model")
    return directory
