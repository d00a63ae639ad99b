"""The flags of Transformers' `convert_llama_weights_to_hf.py`, accepted by `convert.py` / `mlx-llama convert`,
so the commands on the Transformers LLaMA pages work as written:

    python convert.py --input_dir /path/to/llama --model_size 7B --output_dir /output/path
"""

from __future__ import annotations

import argparse

from .errors import ConversionError


def add_seed_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input_dir", dest="source_flag", help="same as SOURCE")
    parser.add_argument("--output_dir", dest="output_flag", help="same as OUTPUT")
    parser.add_argument("--model_size", help="accepted for compatibility: the size is read from params.json")
    parser.add_argument(
        "--safe_serialization",
        nargs="?",
        const="true",
        default="true",
        help="accepted for compatibility: the output is always safetensors",
    )


def apply_seed_flags(args: argparse.Namespace) -> None:
    """Fold --input_dir / --output_dir into SOURCE / OUTPUT; refuse what cannot be honoured."""
    for name, flag_name in (("source", "--input_dir"), ("output", "--output_dir")):
        flag = getattr(args, f"{name}_flag", None)
        if flag is not None and getattr(args, name) not in (None, flag):
            raise ConversionError(f"both {name.upper()} and {flag_name} were given; use one")
        setattr(args, name, getattr(args, name) or flag)
        if getattr(args, name) is None:
            raise ConversionError(f"missing {name.upper()} (or {flag_name})")
    if str(getattr(args, "safe_serialization", "true")).lower() in ("false", "0", "no"):
        raise ConversionError("--safe_serialization False: mlx-llama writes safetensors only")
