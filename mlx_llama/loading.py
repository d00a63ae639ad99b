"""`load(path_or_repo_id) -> (model, tokenizer)`: one call from a directory or a Hub id to a ready model.

The class comes from config.json: the first known name in `architectures`, else the `model_type`'s
causal-LM class. Names map to classes through a table, never through reflection on the file's text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlx.core as mx

from .config import read_config_json
from .errors import CheckpointError, ConfigError, shorten
from .modeling.heads import (
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from .modeling.llama import LlamaModel
from .modeling.open_llama import OpenLlamaForCausalLM, OpenLlamaForSequenceClassification, OpenLlamaModel

DEMO_MODEL = Path(__file__).parent / "assets" / "demo"  # the small demo checkpoint shipped in the package

# architecture name (config.json's `architectures`) -> class.
ARCHITECTURES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        LlamaForQuestionAnswering,
        LlamaForTokenClassification,
        LlamaModel,
        OpenLlamaForCausalLM,
        OpenLlamaForSequenceClassification,
        OpenLlamaModel,
    )
}

# model_type -> the architecture used when `architectures` is missing or names nothing known.
MODEL_TYPES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "open-llama": "OpenLlamaForCausalLM",
}


def resolve_model_path(path_or_repo_id: str | os.PathLike) -> Path:
    """A local directory as is; an `owner/name` Hub id through huggingface_hub (HF_HUB_OFFLINE: cache only)."""
    from .checkpoint import hub

    if not isinstance(path_or_repo_id, (str, os.PathLike)) or not str(path_or_repo_id):
        raise ConfigError(f"expected a model directory or Hub id, got {shorten(path_or_repo_id)}")
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_repo_id)
    if path.exists():
        raise CheckpointError(f"{name}: is a file; give the model directory that holds config.json")
    if not hub.looks_like_repo_id(name):
        raise CheckpointError(
            f"{name}: no such model directory; give a directory with config.json (e.g. one made by "
            "`mlx-llama convert`) or a Hugging Face Hub id such as 'owner/model'"
        )
    return hub.fetch(name)


def model_class(config: dict[str, Any], where: str = "config.json"):
    """The model class a config.json asks for."""
    names = config.get("architectures") or []
    if isinstance(names, str):
        names = [names]
    chosen = next((n for n in names if n in ARCHITECTURES), None)
    if chosen is None:
        model_type = config.get("model_type")
        if names and model_type not in MODEL_TYPES:
            raise ConfigError(
                f"{where}: architectures {names} are not supported; known: {', '.join(sorted(ARCHITECTURES))}"
            )
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"{where}: model_type {model_type!r} is not supported; known: {', '.join(MODEL_TYPES)}")
        chosen = MODEL_TYPES[model_type]
    return ARCHITECTURES[chosen]


def load_model(path_or_repo_id: str | os.PathLike, dtype: str | mx.Dtype | None = None, parallel: str | None = None):
    """The model alone, class chosen from config.json; `parallel` ("tensor" / "pipeline"): this rank's part."""
    path = resolve_model_path(path_or_repo_id)
    cls = model_class(read_config_json(path), str(path / "config.json"))
    if parallel is not None:
        from .parallel import load_parallel

        return load_parallel(cls, path, parallel, dtype=dtype)
    return cls.from_pretrained(path, dtype=dtype)


def load_tokenizer(path_or_repo_id: str | os.PathLike):
    """The tokenizer stored next to the weights: fast (tokenizer.json) when there is one, else SentencePiece."""
    from .tokenizer import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(path_or_repo_id))


def load(
    path_or_repo_id: str | os.PathLike,
    dtype: str | mx.Dtype | None = None,
    parallel: str | None = None,
    adapter_path: str | os.PathLike | None = None,
):
    """Load `(model, tokenizer)` from a converted or Transformers directory, or a Hub id.

    `dtype=None` lets the model pick its load-time layout (see `from_pretrained`); pass e.g. "float16"
    to override it. Inside an `mx.distributed` group, `parallel="tensor"` or `"pipeline"` loads only this
    rank's part of the weights (see `mlx_llama.parallel`). `adapter_path`: a PEFT LoRA adapter directory
    applied on top (its task type picks the head).
    """
    path = resolve_model_path(path_or_repo_id)
    if adapter_path is not None and parallel is not None:
        raise ConfigError("adapter_path with parallel is not supported: fuse the adapter first (mlx-llama fuse)")
    if adapter_path is not None:
        from .lora.adapter_io import load_with_adapter

        model = load_with_adapter(path, adapter_path, dtype)
    else:
        model = load_model(path, dtype=dtype, parallel=parallel)
    tokenizer = load_tokenizer(path)
    check_vocab_fits(model, tokenizer, path)
    return model, tokenizer


def check_vocab_fits(model, tokenizer, path: Path) -> None:
    """Every id the tokenizer can produce must be a row of the model's embedding (else it reads garbage)."""
    vocab = model.config.vocab_size
    get_vocab = getattr(tokenizer, "get_vocab", None)
    ids = get_vocab().values() if callable(get_vocab) else range(len(tokenizer))
    top = max(ids, default=-1)
    if top >= vocab:
        raise CheckpointError(
            f"{path}: the tokenizer has token id {top}, but the model's vocab_size is {vocab} (ids 0 .. "
            f"{vocab - 1}); the tokenizer files do not belong to this model"
        )
