"""Tiny checkpoints for the generation, loading and CLI tests: a sentencepiece tokenizer trained here and a random
Transformers Llama saved with save_pretrained (the Transformers layout our loaders must read)."""

from __future__ import annotations

from pathlib import Path

from .hf_llama import hf_tiny_model
from .spm import write_llama_tokenizer

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
    return write_llama_tokenizer(directory, corpus(), vocab_size)


def write_checkpoint(directory: Path, seed: int = 0, with_tokenizer: bool = True, **overrides):
    """A Transformers-layout directory (config.json, model.safetensors, tokenizer); returns the HF model."""
    vocab = train_tokenizer(directory) if with_tokenizer else overrides.pop("vocab_size", 128)
    model = hf_tiny_model(vocab, seed=seed, **overrides)
    model.save_pretrained(directory, safe_serialization=True)
    return model
