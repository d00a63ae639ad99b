"""Transformers' Auto classes: the class comes from config.json's `model_type` (llama / open-llama).

`AutoModelForX.from_pretrained(path_or_hub_id, **kwargs)` takes what the chosen class's `from_pretrained`
takes (dtype, config overrides such as num_labels); a task Open-Llama has no head for is a clear error.
"""

from __future__ import annotations

import os
from typing import Any

from .config import LlamaConfig, read_config_json
from .errors import ConfigError
from .modeling.heads import (
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from .modeling.llama import LlamaModel
from .modeling.open_llama import OpenLlamaForCausalLM, OpenLlamaForSequenceClassification, OpenLlamaModel
from .open_llama_config import OpenLlamaConfig

# task -> model_type -> class
MODEL_MAPPINGS: dict[str, dict[str, type]] = {
    "base": {"llama": LlamaModel, "open-llama": OpenLlamaModel},
    "causal-lm": {"llama": LlamaForCausalLM, "open-llama": OpenLlamaForCausalLM},
    "sequence-classification": {
        "llama": LlamaForSequenceClassification,
        "open-llama": OpenLlamaForSequenceClassification,
    },
    "question-answering": {"llama": LlamaForQuestionAnswering},
    "token-classification": {"llama": LlamaForTokenClassification},
}
CONFIGS: dict[str, type] = {"llama": LlamaConfig, "open-llama": OpenLlamaConfig}


def _model_type(path, where: str) -> str:
    model_type = read_config_json(path).get("model_type")
    if model_type not in CONFIGS:
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported; known: {', '.join(CONFIGS)}")
    return model_type


class AutoConfig:
    """`AutoConfig.from_pretrained(path)` -> LlamaConfig or OpenLlamaConfig; `for_model("llama", **fields)`."""

    @staticmethod
    def from_pretrained(path_or_repo_id: str | os.PathLike, **kwargs: Any):
        from .loading import resolve_model_path

        path = resolve_model_path(path_or_repo_id)
        return (CONFIGS[_model_type(path, str(path / "config.json"))]).from_pretrained(path, **kwargs)

    @staticmethod
    def for_model(model_type: str, **kwargs: Any):
        if model_type not in CONFIGS:
            raise ConfigError(f"model_type {model_type!r} is not supported; known: {', '.join(CONFIGS)}")
        return (CONFIGS[model_type])(**kwargs)


class _AutoModel:
    task = "base"

    @classmethod
    def model_class(cls, model_type: str, where: str):
        mapping = MODEL_MAPPINGS[cls.task]
        if model_type not in mapping:
            raise ConfigError(
                f"{where}: {cls.__name__} has no class for model_type {model_type!r} (available: {', '.join(mapping)})"
            )
        return mapping[model_type]

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, *args: Any, **kwargs: Any):
        from .loading import resolve_model_path

        path = resolve_model_path(path_or_repo_id)
        where = str(path / "config.json")
        return cls.model_class(_model_type(path, where), where).from_pretrained(path, *args, **kwargs)

    @classmethod
    def from_config(cls, config: Any):
        """A freshly initialised model for `config` (a LlamaConfig or OpenLlamaConfig)."""
        return cls.model_class(config.model_type, type(config).__name__)(config)


class AutoModel(_AutoModel):
    task = "base"


class AutoModelForCausalLM(_AutoModel):
    task = "causal-lm"


class AutoModelForSequenceClassification(_AutoModel):
    task = "sequence-classification"


class AutoModelForQuestionAnswering(_AutoModel):
    task = "question-answering"


class AutoModelForTokenClassification(_AutoModel):
    task = "token-classification"


class AutoTokenizer:
    """The tokenizer stored with a model: `mlx_llama.tokenizer.AutoTokenizer`'s choice (tokenizer.json -> fast,
    else SentencePiece), with Hub ids resolved as for models; keyword arguments go to the tokenizer class."""

    @staticmethod
    def from_pretrained(path_or_repo_id: str | os.PathLike, **kwargs: Any):
        from .loading import resolve_model_path
        from .tokenizer import AutoTokenizer as FromDirectory

        return FromDirectory.from_pretrained(resolve_model_path(path_or_repo_id), **kwargs)
