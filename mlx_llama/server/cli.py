"""The `mlx-llama serve` subcommand: its arguments and handler (the server itself is imported lazily)."""

from __future__ import annotations

import argparse
import os
import re

from ..errors import MlxLlamaError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(text: str) -> int:
    """'1073741824', '512MB', '2GiB', '0' (off) -> bytes."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower().rstrip("b") if match else None
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1073741824, 512MB, 2GiB, 0 to disable)")
    return int(float(match.group(1)) * _UNITS[unit])


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (continuous batching, prompt cache)")
    p.add_argument("--model", help="model directory or Hugging Face Hub id (default: the bundled demo model)")
    p.add_argument("--dtype", help="compute dtype: float32, float16 or bfloat16 (default: the model's)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument(
        "--max-concurrency", type=int, default=8, help="requests decoded together; more wait in a queue (default 8)"
    )
    p.add_argument(
        "--prompt-cache-bytes",
        type=parse_bytes,
        default="1GiB",
        help="bound of the prompt (KV) cache, e.g. 512MB; 0 disables it (default 1GiB)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("MLX_LLAMA_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $MLX_LLAMA_API_KEY, else none)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allow browser requests from ORIGIN (repeatable; '*' for any)",
    )
    p.add_argument("--model-id", help="the model name reported by /v1/models (default: from --model)")
    p.add_argument("--prefill-step-size", type=int, default=512, help="prompt tokens per prefill chunk")
    p.add_argument("--quiet", action="store_true", help="no notices on stderr")
    p.add_argument(
        "--parallel",
        choices=("tensor",),
        help="split the model over the ranks started by mlx.launch; rank 0 serves HTTP",
    )
    return p


def run(args: argparse.Namespace) -> None:
    from . import serve

    if args.max_concurrency < 1:
        raise MlxLlamaError(f"--max-concurrency must be at least 1, got {args.max_concurrency}")
    serve(
        args.model,
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        max_concurrency=args.max_concurrency,
        prompt_cache_bytes=args.prompt_cache_bytes,
        api_key=args.api_key or None,
        cors_origins=args.cors_origin,
        prefill_step_size=args.prefill_step_size,
        model_id=args.model_id,
        quiet=args.quiet,
        parallel=args.parallel,
    )
