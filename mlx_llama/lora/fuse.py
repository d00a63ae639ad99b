"""`fuse`: fold a PEFT-format adapter into its base model and save a plain Transformers directory.

The merge runs in float32 and the result is cast back to the base checkpoint's stored dtype (or `dtype`):
fusing must not silently change precision, and a float32 base cast to float16 is already ~1e-3 off.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlx.core as mx

from ..checkpoint.safetensors_io import load_safetensors
from ..dtypes import parse_dtype
from ..errors import MlxLlamaError
from .adapter_io import load_with_adapter
from .apply import fuse_lora

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
)


def stored_dtype(path: Path) -> mx.Dtype:
    """The dtype of the checkpoint's float weights (read from the safetensors headers, no data loaded)."""
    weights = load_safetensors(path)
    for key, value in weights.items():
        if mx.issubdtype(value.dtype, mx.floating) and not key.endswith((".scales", ".biases")):
            return value.dtype
    return mx.float32


def fuse(
    model_path: str | Path,
    adapter_path: str | Path,
    save_path: str | Path,
    dequantize: bool = False,
    dtype: str | mx.Dtype | None = None,
) -> Path:
    """Base + adapter -> `save_path` (config.json, safetensors, tokenizer files); returns the path."""
    from ..loading import resolve_model_path

    model_path = resolve_model_path(model_path)
    save_path = Path(save_path)
    if save_path.resolve() == Path(model_path).resolve():
        raise MlxLlamaError(f"{save_path}: the fused model must not overwrite its base model")
    target = parse_dtype(dtype, "--dtype") or stored_dtype(model_path)
    model = load_with_adapter(model_path, adapter_path, dtype=mx.float32)
    count = fuse_lora(model, dequantize=dequantize)
    model.set_dtype(target)
    mx.eval(model.parameters())
    model.save_pretrained(save_path)
    for name in TOKENIZER_FILES:
        if (model_path / name).is_file():
            shutil.copy(model_path / name, save_path / name)
    if count == 0:
        raise MlxLlamaError(f"{adapter_path}: the adapter wrapped no layer")
    return save_path
