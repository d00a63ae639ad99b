"""SentencePiece models trained in the test process (a few hundred ms each), so no test needs a download."""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece

# The special ids every LLaMA tokenizer uses.
LLAMA_IDS = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)


def train_spm(lines: list[str], vocab_size: int, **options) -> bytes:
    """A serialized BPE model trained on `lines`; `options` are SentencePieceTrainer's (LLaMA ids by default)."""
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buffer,
        vocab_size=vocab_size,
        **{"model_type": "bpe", "minloglevel": 2, **LLAMA_IDS, **options},
    )
    return buffer.getvalue()


def write_llama_tokenizer(directory: Path, lines: list[str], vocab_size: int, byte_fallback: bool = False) -> int:
    """tokenizer.model and a LlamaTokenizer tokenizer_config.json (legacy=False, bos added); returns the vocab size."""
    model = train_spm(lines, vocab_size, byte_fallback=byte_fallback)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(model)
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True, "add_eos_token": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return vocab_size
