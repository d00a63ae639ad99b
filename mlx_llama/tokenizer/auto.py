"""`AutoTokenizer.from_pretrained(path)`: the class Transformers' AutoTokenizer would pick for a directory.

The fast tokenizer when `tokenizer.json` exists (`LlamaTokenizerFast` for LLaMA tokenizer classes and
model types, `PreTrainedTokenizerFast` otherwise, e.g. Llama 3's), else the SentencePiece `LlamaTokenizer` (or,
for Meta's Llama 3 tiktoken `tokenizer.model`, a fast tokenizer converted in memory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checkpoint.tiktoken_bpe import is_tiktoken_file
from ..errors import TokenizerError
from ..jsonio import read_json_object
from .fast import LlamaTokenizerFast, PreTrainedTokenizerFast
from .files import CONFIG_FILE, TOKENIZER_FILE, VOCAB_FILE
from .slow import LlamaTokenizer

_LLAMA_CLASSES = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast"}
_LLAMA_MODEL_TYPES = {"llama", "open-llama", "mistral"}


def _tokenizer_class(path: str) -> str | None:
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        return None
    name = read_json_object(config_path, TokenizerError).get("tokenizer_class")
    if name is not None and not isinstance(name, str):
        raise TokenizerError(f"{config_path}: field 'tokenizer_class' must be a string, got {name!r}")
    return name


def _model_type(path: str) -> str | None:
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        return None
    try:
        value = read_json_object(config_path, TokenizerError).get("model_type")
    except TokenizerError:
        return None  # the model loader reports a broken config.json
    return value if isinstance(value, str) else None


def tokenizer_class_for(path: str | os.PathLike, use_fast: bool = True) -> type:
    """The tokenizer class for a checkpoint directory (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise TokenizerError(f"tokenizer directory not found: {path!r}")
    name = _tokenizer_class(path)
    has_fast = os.path.isfile(os.path.join(path, TOKENIZER_FILE))
    has_slow = os.path.isfile(os.path.join(path, VOCAB_FILE))
    if has_fast and (use_fast or not has_slow):
        llama = name in _LLAMA_CLASSES or (name is None and _model_type(path) in _LLAMA_MODEL_TYPES)
        return LlamaTokenizerFast if llama else PreTrainedTokenizerFast
    if has_slow and is_tiktoken_file(Path(path) / VOCAB_FILE):
        return _TiktokenTokenizer
    if has_slow:
        return LlamaTokenizer
    raise TokenizerError(
        f"{path}: no tokenizer found: expected {TOKENIZER_FILE} (fast tokenizer) or {VOCAB_FILE} (SentencePiece) "
        "beside the weights; copy them from the original checkpoint"
    )


class _TiktokenTokenizer:
    """A Meta Llama 3 directory (tiktoken tokenizer.model, no tokenizer.json): converted in memory, as
    Transformers falls back to its tiktoken conversion."""

    @staticmethod
    def from_pretrained(path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerFast:
        import json

        import tokenizers

        from ..checkpoint.tiktoken_bpe import BOS, EOS, tokenizer_json

        data = tokenizer_json(Path(path) / VOCAB_FILE)
        backend = tokenizers.Tokenizer.from_str(json.dumps(data))
        defaults = {"bos_token": BOS, "eos_token": EOS, "clean_up_tokenization_spaces": True}
        return PreTrainedTokenizerFast(tokenizer_object=backend, **{**defaults, **kwargs})


class AutoTokenizer:
    """Pick and load the tokenizer of a checkpoint directory, as Transformers' AutoTokenizer does."""

    def __init__(self) -> None:
        raise TypeError("use AutoTokenizer.from_pretrained(path)")

    @staticmethod
    def from_pretrained(path: str | os.PathLike, use_fast: bool = True, **kwargs: Any):
        """The tokenizer for `path`; keyword arguments go to the class's `from_pretrained`."""
        return tokenizer_class_for(path, use_fast).from_pretrained(path, **kwargs)
