"""Llama 3 / 3.1 / 3.2 in Meta's original layout: which version a directory holds, and what its params.json
means for config.json (rope scaling, context, special-token ids). The tokenizer is in `tiktoken_bpe`.

The tiktoken `tokenizer.model` tells 3.x from LLaMA 1/2 (SentencePiece); `use_scaled_rope` tells 3.1 from
3.0. 3.1 and 3.2 share their files' form, so 3.2 (rope factor 32, tied embeddings) needs --llama-version 3.2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tiktoken_bpe import NUM_SPECIAL, is_tiktoken_file, read_ranks, special_tokens

LLAMA3_VERSIONS = ("3", "3.1", "3.2")
CONTEXT = {"3": 8192, "3.1": 131072, "3.2": 131072}
ROPE_FACTOR = {"3.1": 8.0, "3.2": 32.0}
BOS_ID = 128000


def looks_like_llama3(params: dict, tokenizer_path: Path | None) -> bool:
    """A tiktoken tokenizer, or params only Llama 3 uses (128256 vocab, rope_theta 5e5, scaled rope)."""
    if tokenizer_path is not None and is_tiktoken_file(tokenizer_path):
        return True
    return (
        params.get("vocab_size", -1) >= 100000 or bool(params.get("use_scaled_rope")) or params.get("rope_theta") == 5e5
    )


def infer_version(params: dict) -> str:
    """'3.1' with scaled rope (3.2 must be named), else '3'."""
    return "3.1" if params.get("use_scaled_rope") else "3"


def vocab_size(tokenizer_path: Path) -> int:
    """Base BPE tokens plus the 256 special tokens."""
    return len(read_ranks(tokenizer_path)) + NUM_SPECIAL


def _eos(version: str, instruct: bool, n_base: int) -> int | list[int]:
    names = special_tokens(version)
    end_of_text = n_base + names.index("<|end_of_text|>")
    if not instruct:
        return end_of_text
    stops = ["<|end_of_text|>", "<|eot_id|>"] if version == "3" else ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    return [n_base + names.index(name) for name in stops]


def config_updates(version: str, params: dict, instruct: bool, n_base: int = BOS_ID) -> dict[str, Any]:
    """The config.json values that differ from LLaMA 1/2 for this version."""
    rope_scaling = None
    if version in ROPE_FACTOR:
        rope_scaling = {
            "factor": ROPE_FACTOR[version],
            "low_freq_factor": float(params.get("low_freq_factor", 1.0)),
            "high_freq_factor": float(params.get("high_freq_factor", 4.0)),
            "original_max_position_embeddings": int(params.get("original_max_position_embeddings", 8192)),
            "rope_type": "llama3",
        }
    return {
        "max_position_embeddings": CONTEXT[version],
        "rope_theta": float(params.get("rope_theta", 500000.0)),
        "rope_scaling": rope_scaling,
        "bos_token_id": n_base,
        "eos_token_id": _eos(version, instruct, n_base),
        "tie_word_embeddings": version == "3.2",
    }


def generation_config(version: str, instruct: bool, n_base: int = BOS_ID) -> dict[str, Any]:
    """generation_config.json as the Hub's Llama 3.x repositories ship it (sampling at 0.6 / 0.9)."""
    return {
        "bos_token_id": n_base,
        "eos_token_id": _eos(version, instruct, n_base),
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.9,
    }
