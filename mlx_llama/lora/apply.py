"""Wrap the chosen Linear layers of a model in LoRA/DoRA, choose what trains, and fold adapters back (fuse)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..errors import ConfigError
from ..modeling.cpu_linear import Linear
from .config import LoraConfig, matches_target
from .layers import DoRALinear, LoRALinear, base_weight

OUTPUT_HEADS = ("lm_head", "score", "qa_outputs")


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.QuantizedLinear))


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the module at dotted path `name` (list indices as numbers) in place."""
    *parents, last = name.split(".")
    parent = model
    for part in parents:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        parent[int(last)] = module
    else:
        setattr(parent, last, module)


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """The LoRA wrappers of a model by dotted name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Wrap every Linear that `config.target_modules` selects; returns the wrapped names (an error if none)."""
    heads = set(config.head_modules())
    chosen = []
    for name, module in model.named_modules():
        if not name or not _is_linear(module) or isinstance(module, LoRALinear) or ".base_layer" in name:
            continue
        top = name.split(".")[0]
        if top in heads:  # a saved-whole head is trained directly, as PEFT's modules_to_save
            continue
        if matches_target(config, name, True, top in OUTPUT_HEADS):
            chosen.append((name, module))
    if not chosen:
        raise ConfigError(
            f"target_modules {config.target_modules!r} match no Linear layer of {type(model).__name__}"
            " (LLaMA names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
        )
    cls = DoRALinear if config.use_dora else LoRALinear
    for name, module in chosen:
        r, alpha = config.rank_and_alpha(name)
        set_submodule(model, name, cls(module, r, alpha, config.lora_dropout, config.use_rslora))
    return [name for name, _ in chosen]


def mark_trainable(model: nn.Module, config: LoraConfig, train_heads: list[str]) -> None:
    """Freeze everything, then unfreeze the adapters, the heads in `train_heads` and the biases `config.bias` asks."""
    model.freeze()
    for module in lora_modules(model).values():
        module.lora_A.unfreeze()
        module.lora_B.unfreeze()
        if isinstance(module, DoRALinear):
            module.unfreeze(recurse=False, keys=["lora_magnitude_vector"])
        if config.bias == "lora_only" and "bias" in module.base_layer:
            module.base_layer.unfreeze(recurse=False, keys=["bias"])
    if config.bias == "all":
        for _, module in model.named_modules():
            if "bias" in module and isinstance(module.get("bias"), mx.array):
                module.unfreeze(recurse=False, keys=["bias"])
    for head in train_heads:
        if head in model:
            model[head].unfreeze()


def _dense(weight: mx.array, bias: mx.array | None) -> Linear:
    out_features, in_features = weight.shape
    layer = Linear(in_features, out_features, bias=bias is not None)
    layer.weight = weight
    if bias is not None:
        layer.bias = bias
    return layer


def dequantize_model(model: nn.Module) -> None:
    """Replace every quantized Linear/Embedding by its dense equivalent (the values the quantized one computes)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.QuantizedLinear):
            set_submodule(model, name, _dense(base_weight(module), module.get("bias")))
        elif isinstance(module, nn.QuantizedEmbedding):
            weight = mx.dequantize(
                module["weight"],
                module["scales"],
                module.get("biases"),
                group_size=module.group_size,
                bits=module.bits,
                mode=module.mode,
            )
            dense = nn.Embedding(*weight.shape)
            dense.weight = weight
            set_submodule(model, name, dense)


def fuse_lora(model: nn.Module, dequantize: bool = False) -> int:
    """Fold each adapter into its base weight and drop the wrappers (PEFT's merge_and_unload); returns the count.

    A quantized base is re-quantized with its own group size and bits unless `dequantize` (then the whole
    model becomes dense, and `config.quantization` is cleared).
    """
    wrappers = lora_modules(model)
    for name, module in wrappers.items():
        base = module.base_layer
        merged = _dense(module.merged_weight(), base.get("bias"))
        if isinstance(base, nn.QuantizedLinear) and not dequantize:
            merged = type(base).from_linear(merged, base.group_size, base.bits)
        set_submodule(model, name, merged)
    if dequantize:
        dequantize_model(model)
        if getattr(model, "config", None) is not None:
            model.config.quantization = None
    return len(wrappers)
