"""`finetune`: data directory + model + settings -> a trained adapter directory (what `mlx-llama lora` runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..errors import MlxLlamaError
from .adapter_io import load_adapter_weights, read_adapter_weights, save_adapter
from .apply import apply_lora, mark_trainable
from .config import LoraConfig
from .data import Encoder, Example
from .trainer import TrainingArgs, train

# CLI task name -> (PEFT task type, head class name, the head modules)
TASK_INFO = {
    "causal-lm": ("CAUSAL_LM", "LlamaForCausalLM", []),
    "sequence-classification": ("SEQ_CLS", "LlamaForSequenceClassification", ["score"]),
    "token-classification": ("TOKEN_CLS", "LlamaForTokenClassification", ["score"]),
    "question-answering": ("QUESTION_ANS", "LlamaForQuestionAnswering", ["qa_outputs"]),
}


def pad_id_for(model: nn.Module, tokenizer: Any, task: str) -> int:
    """The id that pads batches; classification pools the last non-pad token, so the config must know it."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    if task == "sequence-classification":
        if model.config.pad_token_id is None:
            model.config.pad_token_id = pad
        pad = model.config.pad_token_id
    return pad


def load_data(data_dir: str | Path, encoder: Encoder) -> tuple[list[Example], list[Example] | None]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MlxLlamaError(f"{data_dir}: no such data directory (expected train.jsonl and valid.jsonl)")
    valid = data_dir / "valid.jsonl"
    return encoder.encode_file(data_dir / "train.jsonl"), (encoder.encode_file(valid) if valid.is_file() else None)


def prepare(
    model: nn.Module, config: LoraConfig, fine_tune_type: str, train_heads: list[str], resume: str | Path | None = None
) -> None:
    """Wrap and freeze for lora/dora (the new heads train too), or train every weight for 'full'."""
    if fine_tune_type == "full":
        if any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()):
            raise MlxLlamaError(
                "--fine-tune-type full cannot train a quantized model; use lora/dora (QLoRA) or a float checkpoint"
            )
        model.unfreeze()
        return
    if fine_tune_type not in ("lora", "dora"):
        raise MlxLlamaError(f"--fine-tune-type must be lora, dora or full, got {fine_tune_type!r}")
    config.use_dora = fine_tune_type == "dora"
    apply_lora(model, config)
    if resume is not None:
        load_adapter_weights(model, read_adapter_weights(resume, model), str(resume))
    mark_trainable(model, config, train_heads)


def finetune(
    model: nn.Module,
    tokenizer: Any,
    data_dir: str | Path,
    adapter_path: str | Path,
    config: LoraConfig,
    args: TrainingArgs,
    task: str = "causal-lm",
    fine_tune_type: str = "lora",
    mask_prompt: bool = False,
    max_seq_length: int = 2048,
    train_heads: list[str] | None = None,
    resume: str | Path | None = None,
    save_every: int = 0,
    report: Callable[[dict], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train `model` in place on data_dir's train.jsonl (validating on valid.jsonl) and save the adapter."""
    if task not in TASK_INFO:
        raise MlxLlamaError(f"unknown task {task!r}; expected one of {', '.join(TASK_INFO)}")
    peft_task, _, heads = TASK_INFO[task]
    config.task_type = peft_task
    train_heads = heads if train_heads is None else train_heads
    label2id = (
        getattr(model.config, "label2id", None) if task in ("sequence-classification", "token-classification") else None
    )
    encoder = Encoder(tokenizer, task, mask_prompt, max_seq_length, label2id)
    train_set, valid_set = load_data(data_dir, encoder)
    pad = pad_id_for(model, tokenizer, task)
    prepare(model, config, fine_tune_type, train_heads, resume)
    adapter_path = Path(adapter_path)

    def save(_: int | None = None) -> None:
        if fine_tune_type == "full":
            model.save_pretrained(adapter_path)
            if hasattr(tokenizer, "save_pretrained"):  # a whole model directory: usable on its own
                tokenizer.save_pretrained(adapter_path)
        else:
            save_adapter(model, config, adapter_path, train_heads)

    def checkpoint(it: int) -> None:
        if on_step is not None:
            on_step(it)
        if save_every and it % save_every == 0:
            save()

    history = train(model, train_set, valid_set, args, task, pad, report, checkpoint)
    mx.eval(model.parameters())
    save()
    return history
