"""Tiny checkpoints for the generation, loading and CLI tests: a sentencepiece tokenizer trained here and
a random Transformers Llama saved with save_pretrained (the Transformers layout our loaders must read)."""

from __future__ import annotations

import io
import json
from pathlib import Path

WORDS = (
    "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees "
    "a small boat sailed over the quiet lake at dawn as children laughed near the old stone bridge"
).split()


def corpus(n: int = 400) -> list[str]:
    """Deterministic English-like sentences, enough for a sentencepiece model of a few hundred pieces."""
    lines = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(6 + i % 7)]
        lines.append(" ".join(words).capitalize() + ".")
    return lines


def train_tokenizer(directory: Path, vocab_size: int = 160) -> int:
    """Write tokenizer.model (Llama ids: unk 0, bos 1, eos 2) and tokenizer_config.json; return the vocab size."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        byte_fallback=False,
        minloglevel=2,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(buffer.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True, "add_eos_token": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return vocab_size


def hf_tiny_model(vocab_size: int, seed: int = 0, **overrides):
    """A random Transformers LlamaForCausalLM (GQA, float32, eager attention), in eval mode."""
    import torch
    import transformers

    kw = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )
    kw.update(overrides)
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(attn_implementation="eager", **kw)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger logits than the 0.02-std init, so greedy choices are not near-ties
        model.lm_head.weight.mul_(8.0)
    return model


def write_checkpoint(directory: Path, seed: int = 0, with_tokenizer: bool = True, **overrides):
    """A Transformers-layout directory (config.json, model.safetensors, tokenizer); returns the HF model."""
    vocab = train_tokenizer(directory) if with_tokenizer else overrides.pop("vocab_size", 128)
    model = hf_tiny_model(vocab, seed=seed, **overrides)
    model.save_pretrained(directory, safe_serialization=True)
    return model
