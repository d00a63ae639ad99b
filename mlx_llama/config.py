"""LlamaConfig: the fields, defaults and config.json format of Transformers' LlamaConfig (4.57).

Keys of a config.json that the dataclass does not model are kept in `extra` and written back on save,
so a round trip through this class never loses information.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .jsonio import read_json_object
from .rope import validate_rope_scaling

ACTIVATIONS = ("silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
CONFIG_NAME = "config.json"


@dataclass
class LlamaConfig:
    """Configuration of a LLaMA / Llama 2 model, with Transformers' defaults (LLaMA-7B v1 shapes)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pretraining_tp: int = 1
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    head_dim: int | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    num_labels: int | None = None
    problem_type: str | None = None
    architectures: list[str] | None = None
    torch_dtype: str | None = None
    quantization: dict[str, int] | None = None
    model_type: str = "llama"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self._init_labels()
        if self.rope_scaling is not None:
            self.rope_scaling = dict(self.rope_scaling)
            # Transformers copies a legacy "type" over "rope_type" (so "type" wins) and keeps both keys.
            if "type" in self.rope_scaling:
                self.rope_scaling["rope_type"] = self.rope_scaling["type"]
        self.validate()

    def _init_labels(self) -> None:
        """num_labels and id2label derive from each other as in Transformers (default: 2 labels).

        An explicit id2label wins over num_labels; label2id is derived only along with a derived id2label
        (Transformers leaves it unset otherwise), so config.json round trips unchanged.
        """
        if self.id2label is not None:
            self.id2label = {int(k): v for k, v in self.id2label.items()}
        else:
            n = 2 if self.num_labels is None else self.num_labels
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.num_labels = len(self.id2label)
        if self.label2id is not None:
            self.label2id = {k: int(v) for k, v in self.label2id.items()}

    @property
    def head_dim_(self) -> int:
        """The per-head size actually used: `head_dim` if set, else hidden_size // num_attention_heads."""
        return self.head_dim if self.head_dim else self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        """Raise ConfigError (a ValueError) naming the field for values the model cannot run with."""
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field `{name}` must be a positive integer, got {value!r}")
        if not self.head_dim and self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"config field `hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}), or set `head_dim` explicitly"
            )
        if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim <= 0):
            raise ConfigError(f"config field `head_dim` must be a positive integer or null, got {self.head_dim!r}")
        if self.head_dim_ % 2 != 0:
            raise ConfigError(f"config field `head_dim` must be even for rotary embeddings, got {self.head_dim_}")
        kv = self.num_key_value_heads
        if not isinstance(kv, int) or kv <= 0 or self.num_attention_heads % kv != 0:
            raise ConfigError(
                f"config field `num_key_value_heads` ({kv!r}) must be a positive divisor of "
                f"`num_attention_heads` ({self.num_attention_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"config field `hidden_act` is {self.hidden_act!r}; expected one of {ACTIVATIONS}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"config field `problem_type` is {self.problem_type!r}; expected one of {PROBLEM_TYPES}")
        eps = self.rms_norm_eps
        if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
            raise ConfigError(f"config field `rms_norm_eps` must be a positive number, got {self.rms_norm_eps!r}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"config field `attention_dropout` must be in [0, 1), got {self.attention_dropout!r}")
        validate_rope_scaling(self.rope_scaling, self.head_dim_, self.max_position_embeddings)

    # ---- dict / json I/O -------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, config: dict[str, Any], **overrides: Any) -> LlamaConfig:
        """Build from a config.json dict; keys the class does not model are kept in `extra`."""
        data = {**config, **overrides}
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        if "dtype" in extra and "torch_dtype" not in kwargs:  # Transformers >= 4.56 writes "dtype"
            kwargs["torch_dtype"] = extra.pop("dtype")
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict: every field, then the unmodelled keys; None-valued bookkeeping fields omitted."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "num_labels" or (f.name in ("quantization", "architectures", "torch_dtype") and value is None):
                continue  # num_labels is derived from id2label, as in Transformers' config.json
            if f.name == "id2label":
                value = {str(k): v for k, v in value.items()}
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> LlamaConfig:
        """Read `config.json` from a directory (or the file itself)."""
        return cls.from_dict(read_config_json(path), **overrides)

    def save_pretrained(self, path: str | Path) -> None:
        """Write `config.json` into the directory (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / CONFIG_NAME, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


def read_config_json(path: str | Path) -> dict[str, Any]:
    """Load a config.json (directory or file) with errors that name the file."""
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path
    return read_json_object(file, ConfigError, "a model directory needs a config.json")
