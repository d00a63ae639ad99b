"""Transformers' forward-call options that only change the calling convention: `return_dict=False`
(tuples), `cache_position`, `num_logits_to_keep`, and the legacy tuple `past_key_values` (an error)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import ConfigError


def finish(output: Any, return_dict: bool | None) -> Any:
    """The output dataclass, or its `to_tuple()` when `return_dict=False`."""
    return output if return_dict is None or return_dict else output.to_tuple()


def check_past_key_values(past_key_values: Any) -> None:
    """Only our cache objects carry keys between calls; Transformers' legacy tuples are refused clearly."""
    if past_key_values is None:
        return
    legacy = isinstance(past_key_values, tuple) or (
        isinstance(past_key_values, list) and past_key_values and isinstance(past_key_values[0], (tuple, list))
    )
    if legacy or not all(hasattr(layer, "update_and_fetch") for layer in past_key_values):
        raise ConfigError(
            "past_key_values must be the cache list of model.make_cache() (or an output's "
            "past_key_values); Transformers' tuple-of-(key, value) caches are not supported"
        )


def positions_from_cache_position(cache_position: Any, position_ids: Any, past: int, T: int) -> Any:
    """Transformers derives default positions from `cache_position`; it must continue our cache."""
    if cache_position is None:
        return position_ids
    cache_position = np.asarray(cache_position).reshape(-1)
    if not np.array_equal(cache_position, np.arange(past, past + T)):
        raise ConfigError(
            f"cache_position {cache_position.tolist()} does not continue the cache: expected "
            f"arange({past}, {past + T}) (the cache holds {past} positions)"
        )
    return position_ids


def logits_slice(h: mx.array, logits_to_keep: Any, num_logits_to_keep: Any) -> mx.array:
    """Keep the last n positions (0 = all), or the positions listed in a 1D index array."""
    if num_logits_to_keep is not None:  # the pre-4.50 name
        logits_to_keep = num_logits_to_keep
    if isinstance(logits_to_keep, (int, np.integer)):
        return h[:, -int(logits_to_keep) :] if logits_to_keep else h
    index = mx.array(np.asarray(logits_to_keep).astype(np.int32).reshape(-1))
    return h[:, index]
