"""Prompt-cache files: a prompt's KV state saved once, reused by later generations.

The safetensors file holds every layer's keys/values (cache.save_cache_file) plus metadata: the token ids the
cache holds, the model's name and a fingerprint of its config and weights. Loading refuses a file whose
fingerprint differs from the model's, since another model's keys would silently give wrong output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..cache import load_cache_file, save_cache_file
from ..errors import CheckpointError

FORMAT = "mlx-llama-prompt-cache-1"
SAMPLED_PARAMS = 4  # the first and last few parameters (by name) enter the fingerprint


def model_fingerprint(model) -> str:
    """sha256 of the config and of the first values of a few weights: cheap, and differs between models."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        fields = {k: v for k, v in config.to_dict().items() if k not in ("torch_dtype", "_name_or_path")}
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    params = sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0])
    for name, value in params[:SAMPLED_PARAMS] + params[-SAMPLED_PARAMS:]:
        head = value.reshape(-1)[:256]
        head = head.astype(mx.float32) if mx.issubdtype(head.dtype, mx.floating) else head
        digest.update(name.encode())
        digest.update(np.array(head).tobytes())
    return digest.hexdigest()


def save_prompt_cache(path: str | Path, model, cache: Sequence, tokens: Sequence[int], model_name: str = "") -> None:
    """Save `cache` (holding `tokens`) for `model`."""
    mx.eval([a for layer in cache for a in layer.state])
    metadata = {
        "format": FORMAT,
        "model": model_name,
        "fingerprint": model_fingerprint(model),
        "tokens": json.dumps([int(t) for t in tokens]),
    }
    save_cache_file(path, list(cache), metadata)


def load_prompt_cache(path: str | Path, model) -> tuple[list, list[int]]:
    """(cache, token ids) from a file saved for this same model; CheckpointError otherwise."""
    cache, metadata = load_cache_file(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mlx-llama prompt-cache file (format {metadata.get('format')!r})")
    if metadata.get("fingerprint") != model_fingerprint(model):
        raise CheckpointError(
            f"{path}: this prompt cache was made with another model "
            f"({metadata.get('model') or 'unnamed'}); recreate it with `mlx-llama cache-prompt` "
            "for the model in use"
        )
    if len(cache) != len(model.layers):
        raise CheckpointError(f"{path}: {len(cache)} cached layers, the model has {len(model.layers)}")
    return cache, json.loads(metadata["tokens"])
