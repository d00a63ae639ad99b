"""The tokenizer part of `convert`: copy a Transformers directory's tokenizer files (refusing ones that do not
load), or write the tokenizer files of a Meta checkpoint (SentencePiece for LLaMA 1/2, a tokenizer.json made
from the tiktoken file for Llama 3.x)."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

from .checkpoint import llama3, tiktoken_bpe
from .checkpoint.meta import MetaCheckpoint, read_tokenizer
from .errors import ConversionError, MlxLlamaError
from .tokenizer import AutoTokenizer

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def write_meta_tokenizer(source: MetaCheckpoint, tmp: Path) -> None:
    """tokenizer.model plus the configs Transformers' LlamaTokenizer reads (LLaMA 1/2 conventions); for
    Llama 3.x a tokenizer.json made from the tiktoken file, and generation_config.json."""
    if source.tokenizer_path is None:
        print(f"warning: no tokenizer.model beside {source.directory}; the output has no tokenizer", file=sys.stderr)
        return
    if source.is_llama3:
        context = source.config["max_position_embeddings"]
        tiktoken_bpe.write_tokenizer(source.tokenizer_path, tmp, source.version, context, source.instruct)
        gen = llama3.generation_config(source.version, source.instruct, source.config["bos_token_id"])
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        return
    shutil.copyfile(source.tokenizer_path, tmp / "tokenizer.model")
    sp = read_tokenizer(source.tokenizer_path)
    special = {
        "bos_token": sp.IdToPiece(sp.bos_id()),
        "eos_token": sp.IdToPiece(sp.eos_id()),
        "unk_token": sp.IdToPiece(sp.unk_id()),
    }
    tokenizer_config = {
        "tokenizer_class": "LlamaTokenizer",
        **special,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": source.config["max_position_embeddings"],
    }
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def copy_tokenizer(src_dir: Path, tmp: Path) -> None:
    """Copy every tokenizer file of a Transformers directory; refuse tokenizer files that do not load."""
    for name in TOKENIZER_FILES:
        if (src_dir / name).is_file():
            shutil.copyfile(src_dir / name, tmp / name)
    if (src_dir / "additional_chat_templates").is_dir():
        shutil.copytree(src_dir / "additional_chat_templates", tmp / "additional_chat_templates")
    if not any((tmp / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        if any((tmp / n).is_file() for n in TOKENIZER_FILES[2:6]):
            raise ConversionError(
                f"{src_dir}: tokenizer files but no tokenizer.json or tokenizer.model; the output could not "
                "tokenize (copy the tokenizer's vocabulary file into the source)"
            )
        print(f"warning: no tokenizer in {src_dir}; the output has weights only", file=sys.stderr)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            AutoTokenizer.from_pretrained(tmp)
    except MlxLlamaError as exc:
        raise ConversionError(f"{src_dir}: its tokenizer does not load: {exc}") from None
