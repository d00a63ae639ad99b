"""The tokenizer check of `convert`: the output's tokenizer files must load (the files themselves are written by
the source: `write_tokenizer` of `checkpoint.transformers_dir` / `checkpoint.meta`)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .checkpoint.transformers_dir import TOKENIZER_FILES
from .errors import ConversionError, MlxLlamaError
from .tokenizer import AutoTokenizer


def check_tokenizer(src_dir: Path, out: Path) -> None:
    """Refuse an output whose tokenizer files do not load; warn when it has no tokenizer at all."""
    if not any((out / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        if any((out / n).is_file() for n in TOKENIZER_FILES[2:6]):
            raise ConversionError(
                f"{src_dir}: tokenizer files but no tokenizer.json or tokenizer.model; the output could not "
                "tokenize (copy the tokenizer's vocabulary file into the source)"
            )
        if not (src_dir / "params.json").is_file():  # Meta sources warn about a missing tokenizer themselves
            print(f"warning: no tokenizer in {src_dir}; the output has weights only", file=sys.stderr)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            AutoTokenizer.from_pretrained(out)
    except MlxLlamaError as exc:
        raise ConversionError(f"{src_dir}: its tokenizer does not load: {exc}") from None
