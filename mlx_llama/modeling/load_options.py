"""Transformers' `from_pretrained` keyword options: the ones MLX honours, and clear errors for the rest.

None of these options is a model setting, so none of them is ever written into a saved config.json.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from ..dtypes import parse_dtype
from ..errors import ConfigError

# Options with no MLX equivalent -> what to do instead.
UNSUPPORTED = {
    "device_map": "MLX places arrays in unified memory itself; drop device_map (the default device is used)",
    "load_in_4bit": "quantize once with `mlx-llama convert SRC OUT -q --q-bits 4` and load OUT",
    "load_in_8bit": "quantize once with `mlx-llama convert SRC OUT -q --q-bits 8` and load OUT",
    "quantization_config": "quantize with `mlx-llama convert SRC OUT -q` (bitsandbytes/GPTQ/AWQ configs do "
    "not apply to MLX); an MLX-quantized directory loads as it is",
    "max_memory": "MLX has no per-device memory map; drop max_memory",
    "offload_folder": "MLX memory-maps safetensors and needs no offloading; drop offload_folder",
}
ATTENTION = ("eager", "sdpa")  # both are the same math here (MLX's fused attention, Transformers' eager masks)
NO_EFFECT = ("low_cpu_mem_usage", "use_safetensors", "trust_remote_code", "local_files_only")


def pop_load_options(kwargs: dict[str, Any]) -> None:
    """Remove loading options from `kwargs` (which are otherwise config overrides); raise for the impossible."""
    for name, advice in UNSUPPORTED.items():
        if name in kwargs and kwargs[name] not in (None, False, "cpu"):
            raise ConfigError(f"from_pretrained({name}={kwargs[name]!r}) is not supported on MLX: {advice}")
        kwargs.pop(name, None)
    attn = kwargs.pop("attn_implementation", None)
    if attn is not None and attn not in ATTENTION:
        raise ConfigError(
            f"attn_implementation={attn!r} is not available on MLX; use 'eager' or 'sdpa' (both run "
            "MLX's fused scaled_dot_product_attention with Transformers' eager masking)"
        )
    if kwargs.get("use_safetensors") is False:
        raise ConfigError(
            "use_safetensors=False: mlx-llama loads safetensors only; convert .bin/.pth checkpoints "
            "with `mlx-llama convert`"
        )
    for name in NO_EFFECT:
        kwargs.pop(name, None)


def requested_dtype(dtype: Any, torch_dtype: Any) -> mx.Dtype | str | None:
    """`dtype=` or its old name `torch_dtype=` (torch dtypes and names accepted); "auto" stays "auto"."""
    if dtype is not None and torch_dtype is not None and str(dtype) != str(torch_dtype):
        raise ConfigError(f"both dtype={dtype!r} and torch_dtype={torch_dtype!r} were given; pass only dtype")
    value = dtype if dtype is not None else torch_dtype
    if isinstance(value, str) and value == "auto":
        return "auto"
    return parse_dtype(value, "from_pretrained(dtype=...)")


def auto_dtype(config: Any, weights: dict[str, mx.array]) -> mx.Dtype | None:
    """Transformers' dtype="auto": config.json's dtype, else the first floating tensor's dtype."""
    named = getattr(config, "torch_dtype", None)
    if named:
        return parse_dtype(named, "config.json torch_dtype")
    for key, value in weights.items():
        if mx.issubdtype(value.dtype, mx.floating) and not key.endswith((".scales", ".biases")):
            return value.dtype
    return None
