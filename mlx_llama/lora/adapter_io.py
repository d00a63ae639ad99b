"""PEFT-format adapters: adapter_config.json + adapter_model.safetensors with PEFT's key names.

Keys are `base_model.model.<our parameter name>`: our wrappers are named as PEFT's (lora_A, lora_B,
lora_magnitude_vector, base_layer), so a key maps by prefix alone. Loading is strict: PEFT only warns on a
key it cannot place (and the adapter then silently does nothing), we raise an error naming the tensor.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..checkpoint.safetensors_io import load_safetensors
from ..errors import CheckpointError
from .apply import apply_lora, lora_modules
from .config import ADAPTER_WEIGHTS, LoraConfig

PEFT_PREFIX = "base_model.model."
ADAPTER_PARTS = (".lora_A.", ".lora_B.", ".lora_magnitude_vector")


def is_adapter_key(key: str) -> bool:
    return any(part in key or key.endswith(part) for part in ADAPTER_PARTS)


def adapter_state(model: nn.Module, config: LoraConfig, heads: list[str]) -> dict[str, mx.array]:
    """What PEFT saves: the LoRA tensors, the saved-whole heads in `heads`, and biases per `config.bias`."""
    out = {}
    for key, value in tree_flatten(model.parameters()):
        top = key.split(".")[0]
        keep = is_adapter_key(key) or top in heads
        if config.bias == "all" and key.endswith(".bias"):
            keep = True
        if config.bias == "lora_only" and key.endswith(".base_layer.bias"):
            keep = True
        if keep:
            out[PEFT_PREFIX + key] = value
    return out


def save_adapter(model: nn.Module, config: LoraConfig, directory: str | Path, heads: list[str] | None = None) -> None:
    """Write `directory`/adapter_config.json and adapter_model.safetensors (PEFT's layout)."""
    directory = Path(directory)
    heads = list(heads or [])
    saved_heads = [h for h in heads if h in model]
    if saved_heads:
        extra = [h for h in saved_heads if h not in config.head_modules()]
        config.modules_to_save = list(dict.fromkeys((config.modules_to_save or []) + extra)) or None
    config.save(directory)
    weights = adapter_state(model, config, saved_heads)
    mx.save_safetensors(str(directory / ADAPTER_WEIGHTS), weights, metadata={"format": "pt"})


def _our_name(key: str, model: nn.Module) -> str:
    """PEFT key -> our parameter name (the prefix, PEFT's legacy `.weight` on magnitudes, the QA base prefix)."""
    name = key.removeprefix(PEFT_PREFIX)
    name = name.replace(".lora_magnitude_vector.weight", ".lora_magnitude_vector")
    name = name.replace(".default.", ".")
    prefix = getattr(model, "base_model_prefix", "model") or ""
    other = "transformer" if prefix == "model" else "model"
    if prefix and name.startswith(other + ".") and prefix in model:
        name = prefix + name[len(other) :]
    return name


def read_adapter_weights(directory: str | Path, model: nn.Module) -> dict[str, mx.array]:
    """The adapter tensors under our names, from an adapter directory or one safetensors file."""
    directory = Path(directory)
    file = directory if directory.is_file() else directory / ADAPTER_WEIGHTS
    if not file.is_file():
        raise CheckpointError(
            f"{directory}: no {ADAPTER_WEIGHTS} (adapter_model.bin is not read; save with safe_serialization=True)"
        )
    return {_our_name(k, model): v for k, v in load_safetensors(file).items()}


def load_adapter_weights(model: nn.Module, weights: dict[str, mx.array], source: str) -> None:
    """Load adapter tensors into an already wrapped model; every LoRA tensor must be present, nothing unknown."""
    expected = dict(tree_flatten(model.parameters()))
    unexpected = sorted(k for k in weights if k not in expected)
    if unexpected:
        raise CheckpointError(
            f"{source}: tensor(s) {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}"
            f" match no parameter of the adapted {type(model).__name__} (wrong key names, "
            "target_modules or task head?)"
        )
    missing = sorted(k for k in expected if is_adapter_key(k) and k not in weights)
    if missing:
        raise CheckpointError(
            f"{source}: missing adapter tensor(s) {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
        )
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(value.shape)}, expected "
                f"{tuple(expected[key].shape)} (check r and the base model)"
            )
    model.load_weights([(k, v.astype(expected[k].dtype)) for k, v in weights.items()], strict=False)
    mx.eval(model.parameters())


def load_adapter(model: nn.Module, directory: str | Path) -> LoraConfig:
    """Wrap `model` as the adapter's config says and load its tensors (the model stays in eval mode)."""
    directory = Path(directory)
    config = LoraConfig.from_directory(directory)
    if lora_modules(model):
        raise CheckpointError(f"{directory}: the model already carries a LoRA adapter; load the base model again")
    apply_lora(model, config)
    load_adapter_weights(model, read_adapter_weights(directory, model), str(directory / ADAPTER_WEIGHTS))
    return config


def head_class(path: str | Path, head: str | None):
    """The model class for checkpoint `path` with head class name `head` (None: the checkpoint's own class)."""
    from ..config import read_config_json
    from ..loading import ARCHITECTURES, model_class

    raw = read_config_json(Path(path))
    current = model_class(raw, str(Path(path) / "config.json"))
    if head and current.__name__.startswith("OpenLlama"):
        head = "OpenLlama" + head.removeprefix("Llama")
    if head in ARCHITECTURES and current.__name__ != head:
        current = model_class({**raw, "architectures": [head]})
    return current


def load_with_adapter(path: str | Path, adapter_path: str | Path, dtype: str | mx.Dtype | None = None) -> nn.Module:
    """The base model in the head class the adapter's task type names (as AutoPeftModelFor...), adapter applied.

    A classification head saved in the adapter sets `num_labels` (the base config may not know it).
    """
    from .config import TASK_TYPES

    config = LoraConfig.from_directory(adapter_path)
    cls = head_class(path, TASK_TYPES.get(config.task_type or ""))
    overrides = {}
    if config.task_type in ("SEQ_CLS", "TOKEN_CLS") and (Path(adapter_path) / ADAPTER_WEIGHTS).is_file():
        score = load_safetensors(Path(adapter_path) / ADAPTER_WEIGHTS).get(PEFT_PREFIX + "score.weight")
        base_labels = cls.config_class.from_pretrained(path).num_labels
        if score is not None and score.shape[0] != base_labels:  # names are not in the adapter (nor in PEFT's)
            n = score.shape[0]
            overrides = {
                "id2label": {i: f"LABEL_{i}" for i in range(n)},
                "label2id": {f"LABEL_{i}": i for i in range(n)},
            }
    model = cls.from_pretrained(path, dtype=dtype, **overrides)
    load_adapter(model, adapter_path)
    return model
