"""Decoding options of `mlx-llama generate` and the `cache-prompt` / `perplexity` commands.

Speculative decoding (--draft-model, --prompt-lookup), the KV cache kind (--max-kv-size, --kv-bits) and
prompt-cache files (--prompt-cache-file) live here, so cli.py only wires them in.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .errors import MlxLlamaError


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """Options of `generate` (and, for the KV cache ones, of `cache-prompt` and `perplexity`)."""
    p.add_argument("--draft-model", help="a small model of the same vocabulary for speculative decoding")
    p.add_argument("--num-draft-tokens", type=int, default=3, help="tokens drafted per round (default 3)")
    p.add_argument("--prompt-lookup", type=int, metavar="K", help="prompt-lookup decoding: draft K tokens by copying")
    _add_cache_args(p)
    p.add_argument("--prompt-cache-file", help="continue from a file made by `mlx-llama cache-prompt`")
    p.add_argument("--fuse", action="store_true", help="fuse q/k/v and gate/up projections at load time")


def _add_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-kv-size", type=int, help="rotating KV cache of N positions (the first 4 + a window)")
    p.add_argument("--kv-bits", type=int, choices=(2, 3, 4, 5, 6, 8), help="quantize the KV cache to this many bits")
    p.add_argument("--kv-group-size", type=int, default=64, help="group size of the KV quantization (default 64)")
    p.add_argument(
        "--quantized-kv-start",
        type=int,
        default=0,
        help="keep the first N positions in float, then quantize (default 0)",
    )


def add_parsers(sub, add_model_args) -> None:
    """The `cache-prompt` and `perplexity` subcommands."""
    cp = sub.add_parser("cache-prompt", help="run a prompt once and save its KV cache to a file")
    add_model_args(cp)
    cp.add_argument("--prompt", required=True, help="the prompt text, or - to read it from stdin")
    cp.add_argument("--prompt-cache-file", required=True, help="where to write the cache (.safetensors)")
    _add_cache_args(cp)
    pp = sub.add_parser("perplexity", help="perplexity of a text file, in non-overlapping windows")
    add_model_args(pp)
    pp.add_argument("--data", required=True, help="a UTF-8 text file")
    pp.add_argument("--context-length", type=int, default=256, help="tokens per window (default 256)")
    _add_cache_args(pp)


def cache_options(args: argparse.Namespace) -> dict:
    """`make_cache` options from the flags; empty for the default float cache."""
    if getattr(args, "max_kv_size", None) is not None and getattr(args, "kv_bits", None) is not None:
        raise MlxLlamaError("choose --max-kv-size (rotating cache) or --kv-bits (quantized cache), not both")
    if getattr(args, "max_kv_size", None) is not None:
        if args.max_kv_size < 8:
            raise MlxLlamaError(f"--max-kv-size must be at least 8, got {args.max_kv_size}")
        return {"max_kv_size": args.max_kv_size}
    if getattr(args, "kv_bits", None) is not None:
        return {
            "kv_bits": args.kv_bits,
            "kv_group_size": args.kv_group_size,
            "quantized_kv_start": args.quantized_kv_start,
        }
    return {}


def prepare(args: argparse.Namespace, model):
    """Check the decoding flags, load the draft model; returns the prompt cache (or None) and its token ids."""
    if args.num_draft_tokens < 1:
        raise MlxLlamaError(f"--num-draft-tokens must be at least 1, got {args.num_draft_tokens}")
    if args.prompt_lookup is not None and args.prompt_lookup < 1:
        raise MlxLlamaError(f"--prompt-lookup must be at least 1, got {args.prompt_lookup}")
    if args.draft_model and args.prompt_lookup:
        raise MlxLlamaError("choose --draft-model or --prompt-lookup, not both")
    from .loading import load_model

    args.draft = load_model(args.draft_model, dtype=args.dtype) if args.draft_model else None
    if args.fuse:
        from .modeling.fused import fuse_projections

        for m in (model, args.draft):
            if m is not None:
                fuse_projections(m)
    if not args.prompt_cache_file:
        return None, []
    from .generation.prompt_cache import load_prompt_cache

    if cache_options(args):
        raise MlxLlamaError("--prompt-cache-file brings its own KV cache: give --max-kv-size/--kv-bits to cache-prompt")
    return load_prompt_cache(args.prompt_cache_file, model)


def decoding_kwargs(args: argparse.Namespace) -> dict:
    """Extra `stream_generate` arguments for the flags (none for commands without them, e.g. chat)."""
    out = cache_options(args)
    if getattr(args, "draft", None) is not None:
        out.update(draft_model=args.draft, num_draft_tokens=args.num_draft_tokens)
    if getattr(args, "prompt_lookup", None):
        out.update(prompt_lookup=args.prompt_lookup, num_draft_tokens=args.prompt_lookup)
    return out


def draft_summary(responses_from_draft: list[bool]) -> str:
    """The line printed after a speculative generation: how many tokens came from accepted drafts."""
    n, hits = len(responses_from_draft), sum(responses_from_draft)
    return f"Draft: {hits} of {n} generated tokens were accepted drafts ({100 * hits / max(n, 1):.0f}%)"


def _read_prompt(args: argparse.Namespace) -> str:
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not text.strip():
        raise MlxLlamaError("the prompt is empty")
    return text


def run_cache_prompt(args: argparse.Namespace, load) -> None:
    """Prefill the prompt (as raw text, with BOS) and write its KV cache and ids to --prompt-cache-file."""
    import mlx.core as mx

    from .generation.api import _encode_prompt
    from .generation.loop import cache_arrays, prefill
    from .generation.prompt_cache import save_prompt_cache

    model, tokenizer = load(args)
    ids = _encode_prompt(tokenizer, _read_prompt(args))
    options = cache_options(args)
    cache = model.make_cache(**options) if options else model.make_cache()
    prefill(model, cache, mx.array([ids], dtype=mx.int32), step_size=args.prefill_step_size)
    mx.eval(cache_arrays(cache))
    save_prompt_cache(args.prompt_cache_file, model, cache, ids, model_name=str(args.model or "demo"))
    if not args.quiet:
        print(f"Saved the KV cache of {len(ids)} prompt tokens to {args.prompt_cache_file}", file=sys.stderr)


def run_perplexity(args: argparse.Namespace, load) -> None:
    """Print the perplexity (stdout) and the token count (stderr)."""
    from .perplexity import perplexity

    path = Path(args.data)
    if not path.is_file():
        raise MlxLlamaError(f"--data {path}: no such file")
    model, tokenizer = load(args)
    text = path.read_text(encoding="utf-8")
    ppl = perplexity(model, tokenizer, text, args.context_length, cache_options=cache_options(args))
    if not args.quiet:
        n = len(tokenizer.encode(text))
        print(f"{n} tokens, windows of {args.context_length}, mean NLL {math.log(ppl):.4f}", file=sys.stderr)
    print(f"{ppl:.4f}")
