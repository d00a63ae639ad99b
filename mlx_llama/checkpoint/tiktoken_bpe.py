"""Meta's Llama 3 `tokenizer.model` (a tiktoken BPE file: one "base64-token rank" line per token) turned into
the `tokenizer.json` the Hub's Llama 3 tokenizers use: byte-level BPE with Llama 3's split pattern, the 256
special tokens after the vocabulary, and `<|begin_of_text|>` added by the post-processor.

The merges list every way to write a token as two tokens, ordered by the token's rank: the `tokenizers`
BPE then merges the pair whose result ranks lowest, which is tiktoken's rule, so the ids are tiktoken's.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# Llama 3's pre-tokenizer pattern (a fact of the format; llama_models' `Tokenizer.pat_str`).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
NUM_SPECIAL = 256
BOS, EOS, EOM, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"


def special_tokens(version: str) -> list[str]:
    """The 256 special tokens after the vocabulary, as the Hub's Llama 3 (3.0) or 3.1/3.2 tokenizers name them."""
    if version == "3":
        named = [BOS, EOS, *(f"<|reserved_special_token_{i}|>" for i in range(4))]
        named += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", EOT]
        first_reserved = 5
    else:
        named = [BOS, EOS, "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"]
        named += ["<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>"]
        named += ["<|end_header_id|>", EOM, EOT, "<|python_tag|>"]
        first_reserved = 3
    reserved = [f"<|reserved_special_token_{first_reserved + i}|>" for i in range(NUM_SPECIAL - len(named))]
    return named + reserved


def is_tiktoken_file(path: Path) -> bool:
    """True when the file starts like a tiktoken BPE file ("<base64> <rank>" lines), not a SentencePiece proto."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    line = head.split(b"\n", 1)[0].split(b" ")
    return len(line) == 2 and line[1].strip().isdigit() and _b64(line[0]) is not None


def _b64(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def read_ranks(path: Path) -> dict[bytes, int]:
    """token bytes -> rank; the ranks must be 0..n-1."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            token = _b64(parts[0]) if len(parts) == 2 and parts[1].isdigit() else None
            if token is None:
                raise CheckpointError(f"{path}: line {number} is not '<base64 token> <rank>'; not a tiktoken file")
            ranks[token] = int(parts[1])
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise CheckpointError(f"{path}: the ranks are not 0..{len(ranks) - 1} without gaps or repeats")
    return ranks


def _byte_alphabet() -> list[str]:
    """byte -> the character GPT-2's byte-level BPE writes for it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out, extra = [""] * 256, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _merges(ranks: dict[bytes, int], text: dict[bytes, str]) -> list[list[str]]:
    found = []
    for token, rank in ranks.items():
        splits = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in ranks and token[k:] in ranks]
        splits.sort(key=lambda lr: (ranks[lr[0]], ranks[lr[1]]))
        found += [(rank, left, right) for left, right in splits]
    found.sort(key=lambda m: m[0])
    return [[text[left], text[right]] for _, left, right in found]


def _template(bos_id: int) -> dict[str, Any]:
    def special(type_id: int) -> dict:
        return {"SpecialToken": {"id": BOS, "type_id": type_id}}

    def seq(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    return {
        "type": "TemplateProcessing",
        "single": [special(0), seq("A", 0)],
        "pair": [special(0), seq("A", 0), special(1), seq("B", 1)],
        "special_tokens": {BOS: {"id": BOS, "ids": [bos_id], "tokens": [BOS]}},
    }


def tokenizer_json(path: Path, version: str = "3.1") -> dict[str, Any]:
    """The tokenizer.json content for Meta's tiktoken file at `path`."""
    ranks = read_ranks(path)
    alphabet = _byte_alphabet()
    text = {token: "".join(alphabet[b] for b in token) for token in ranks}
    n = len(ranks)
    added = [
        {"id": n + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for i, t in enumerate(special_tokens(version))
    ]  # fmt: skip
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    split = {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False}
    post_byte_level = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte_level]},
        "post_processor": {"type": "Sequence", "processors": [post_byte_level, _template(n)]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {text[token]: rank for token, rank in ranks.items()},
            "merges": _merges(ranks, text),
        },
    }


def write_tokenizer(path: Path, out_dir: Path, version: str, context: int, instruct: bool) -> int:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; return the vocabulary size."""
    from .llama3_templates import chat_template_for

    data = tokenizer_json(path, version)
    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    eos = EOT if instruct else EOS
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": eos,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": context,
    }
    if instruct:
        config["chat_template"] = chat_template_for(version)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special_map = {"bos_token": BOS, "eos_token": eos}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return len(data["model"]["vocab"]) + NUM_SPECIAL
