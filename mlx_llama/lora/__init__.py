"""LoRA, QLoRA and DoRA fine-tuning for every head, with adapters in PEFT's format."""

from .adapter_io import load_adapter, load_with_adapter, save_adapter
from .apply import apply_lora, fuse_lora, mark_trainable
from .config import LoraConfig
from .fuse import fuse
from .layers import DoRALinear, LoRALinear
from .trainer import TrainingArgs, train
from .tuning import finetune

__all__ = [
    "DoRALinear",
    "LoRALinear",
    "LoraConfig",
    "TrainingArgs",
    "apply_lora",
    "finetune",
    "fuse",
    "fuse_lora",
    "load_adapter",
    "load_with_adapter",
    "mark_trainable",
    "save_adapter",
    "train",
]
