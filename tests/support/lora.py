"""Tiny Transformers + PEFT models (the oracle) for the LoRA tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import peft
import torch

import mlx_llama

from .hf_llama import hf_model

TASKS = {  # our head class -> PEFT task type
    "LlamaForCausalLM": "CAUSAL_LM",
    "LlamaForSequenceClassification": "SEQ_CLS",
    "LlamaForTokenClassification": "TOKEN_CLS",
    "LlamaForQuestionAnswering": "QUESTION_ANS",
}
PAD = 0


def save_base(path: Path, cls_name: str = "LlamaForCausalLM", seed: int = 0, **overrides):
    """A tiny random Transformers model saved to `path` (float32 safetensors) with the demo model's tokenizer
    (so the vocabulary covers its 2000 ids, which `load` checks); returns the torch model."""
    overrides.setdefault("vocab_size", 2000)
    model = hf_model(cls_name, seed=seed, pad_token_id=PAD, **overrides)
    model.save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):  # a tokenizer to go along
        shutil.copy(mlx_llama.DEMO_MODEL / name, path / name)
    return model


def peft_model(base, cls_name: str, use_dora: bool, seed: int = 1, targets=("q_proj", "v_proj", "down_proj"), **kwargs):
    """PEFT-wrapped `base` with random (non-zero) adapter weights and magnitudes, so every tensor matters."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=list(targets),
        task_type=TASKS[cls_name],
        use_dora=use_dora,
        init_lora_weights=False,
        **kwargs,
    )
    model = peft.get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.2 * torch.randn_like(p))
            elif "modules_to_save" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def outputs(result) -> np.ndarray:
    """The head's logits as one array (QA: start and end stacked), from a torch or an MLX output."""
    if getattr(result, "start_logits", None) is not None:
        parts = [result.start_logits, result.end_logits]
    else:
        parts = [result.logits]
    return np.stack([p.detach().float().numpy() if isinstance(p, torch.Tensor) else np.array(p) for p in parts])


def token_ids(batch: int = 2, length: int = 9, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 128, size=(batch, length))
