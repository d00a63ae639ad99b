"""Llama 3 tokenizer material for the tests: Meta's tiktoken file read from the installed `llama_models` wheel
(never copied into the repository), a small prefix of it (closed under BPE: every token's parts rank lower),
and tiktoken / Transformers oracles built from the same ranks."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

SMALL_RANKS = 1200  # the first 1200 ranks hold all 256 bytes and every merge they need


def llama3_file() -> Path:
    import llama_models

    return Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"


def _tmpdir(prefix: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, out, True)
    return out


@functools.cache
def small_tiktoken_file() -> Path:
    """The first SMALL_RANKS lines of Meta's file."""
    lines = llama3_file().read_bytes().split(b"\n")[:SMALL_RANKS]
    out = _tmpdir("mlx_llama_tiktoken_") / "tokenizer.model"
    out.write_bytes(b"\n".join(lines) + b"\n")
    return out


@functools.cache
def converted_dir(small: bool, version: str = "3.1", instruct: bool = True) -> str:
    """Our tokenizer.json (+ config) for the real or the small file, in a temporary directory."""
    from mlx_llama.checkpoint.tiktoken_bpe import write_tokenizer

    out = _tmpdir("mlx_llama_llama3_tok_")
    write_tokenizer(small_tiktoken_file() if small else llama3_file(), out, version, 131072, instruct)
    return os.fspath(out)


def tiktoken_encoding(path: Path, version: str = "3.1"):
    """The tiktoken oracle: Meta's pattern (from llama_models) and the same special tokens."""
    import tiktoken
    from llama_models.llama3.tokenizer import Tokenizer

    from mlx_llama.checkpoint.tiktoken_bpe import read_ranks, special_tokens

    ranks = read_ranks(path)
    specials = {t: len(ranks) + i for i, t in enumerate(special_tokens(version))}
    return tiktoken.Encoding("llama3", pat_str=Tokenizer.pat_str, mergeable_ranks=ranks, special_tokens=specials)


def transformers_tiktoken(path: Path, version: str = "3.1"):
    """Transformers' own conversion of the tiktoken file (TikTokenConverter) as a PreTrainedTokenizerFast."""
    import transformers
    from llama_models.llama3.tokenizer import Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from mlx_llama.checkpoint.tiktoken_bpe import special_tokens

    backend = TikTokenConverter(
        vocab_file=str(path), pattern=Tokenizer.pat_str, additional_special_tokens=special_tokens(version)
    ).converted()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )
