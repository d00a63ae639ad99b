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

from .errors import ConfigError, shorten
from .jsonio import read_json_object
from .rope import validate_rope_scaling

ACTIVATIONS = ("silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
CONFIG_NAME = "config.json"
QUANT_BITS = (2, 3, 4, 5, 6, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
MAX_LABELS = 1 << 17  # far beyond any classification head; bounds the id2label table built from num_labels
_SIZE_LIMITS = {  # sizes beyond these are corrupt files, not models (and would overflow MLX's int32 shapes)
    "vocab_size": 1 << 24,
    "hidden_size": 1 << 20,
    "intermediate_size": 1 << 22,
    "num_hidden_layers": 1 << 14,
    "num_attention_heads": 1 << 14,
    "max_position_embeddings": 1 << 28,
    "pretraining_tp": 1 << 10,
}
_BOOLS = ("use_cache", "tie_word_embeddings", "attention_bias", "mlp_bias")
_NUMBERS = ("initializer_range", "rms_norm_eps", "rope_theta", "attention_dropout")
_OPTIONAL_TYPES = {  # field -> (expected type(s), description)
    "rope_scaling": (dict, "an object or null"),
    "id2label": (dict, "an object or null"),
    "label2id": (dict, "an object or null"),
    "architectures": ((list, str), "a list of names or null"),
    "torch_dtype": (str, "a dtype name or null"),
    "quantization": (dict, "an object or null"),
    "problem_type": (str, "a string or null"),
    "model_type": (str, "a string"),
    "hidden_act": (str, "a string"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_field_types(config: Any) -> None:
    """ConfigError naming the first field whose JSON type is wrong (before any value is used)."""
    for name, limit in _SIZE_LIMITS.items():
        value = getattr(config, name)
        if not _is_int(value) or not 0 < value <= limit:
            raise ConfigError(f"config field `{name}` must be a positive integer up to {limit}, got {shorten(value)}")
    for name in ("num_key_value_heads", "head_dim"):
        value = getattr(config, name)
        if value is not None and (not _is_int(value) or not 0 < value <= 1 << 20):
            raise ConfigError(f"config field `{name}` must be a positive integer or null, got {shorten(value)}")
    for name in _BOOLS:
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(f"config field `{name}` must be true or false, got {shorten(getattr(config, name))}")
    for name in _NUMBERS:
        if not _is_number(getattr(config, name)):
            raise ConfigError(f"config field `{name}` must be a finite number, got {shorten(getattr(config, name))}")
    for name in ("pad_token_id", "bos_token_id"):
        value = getattr(config, name)
        if value is not None and not _is_int(value):
            raise ConfigError(f"config field `{name}` must be an integer token id or null, got {shorten(value)}")
    eos = config.eos_token_id
    if eos is not None and not _is_int(eos) and not (isinstance(eos, list) and all(map(_is_int, eos))):
        raise ConfigError(f"config field `eos_token_id` must be an id, a list of ids or null, got {shorten(eos)}")
    for name, (kind, what) in _OPTIONAL_TYPES.items():
        value = getattr(config, name)
        if (value is not None or name in ("model_type", "hidden_act")) and not isinstance(value, kind):
            raise ConfigError(f"config field `{name}` must be {what}, got {shorten(value)}")
    _check_labels(config)
    _check_quantization(config.quantization)


def _check_labels(config: Any) -> None:
    n = config.num_labels
    if n is not None and (not _is_int(n) or not 0 < n <= MAX_LABELS):
        raise ConfigError(f"config field `num_labels` must be an integer from 1 to {MAX_LABELS}, got {shorten(n)}")
    if config.id2label is not None:
        if not 0 < len(config.id2label) <= MAX_LABELS:
            raise ConfigError(f"config field `id2label` must hold 1 to {MAX_LABELS} labels")
        for key, label in config.id2label.items():
            if not (_is_int(key) or (isinstance(key, str) and key.isdigit())) or not isinstance(label, str):
                raise ConfigError(
                    f"config field `id2label` must map ids to label names, got {shorten(key)}: {shorten(label)}"
                )
    if config.label2id is not None:
        for label, key in config.label2id.items():
            if not (_is_int(key) or (isinstance(key, str) and key.lstrip("-").isdigit())):
                raise ConfigError(
                    f"config field `label2id` must map label names to ids, got {shorten(label)}: {shorten(key)}"
                )


def _check_quantization(q: Any) -> None:
    if q is None:
        return
    if (
        q.get("group_size") not in QUANT_GROUP_SIZES
        or q.get("bits") not in QUANT_BITS
        or isinstance(q.get("bits"), bool)
    ):
        raise ConfigError(
            f"config field `quantization` must give group_size in {QUANT_GROUP_SIZES} and bits in {QUANT_BITS}, "
            f"got {shorten(q)}"
        )
    if q.get("mode", "affine") != "affine":
        raise ConfigError(f"config field `quantization.mode` {shorten(q.get('mode'))} is not supported (affine only)")


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
        check_field_types(self)
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
        if self.head_dim is None:  # resolved once, as Transformers' LlamaConfig does
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2 != 0:
            raise ConfigError(f"config field `head_dim` must be even for rotary embeddings, got {self.head_dim}")
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
        if not (_is_number(self.rope_theta) and self.rope_theta > 0):
            raise ConfigError(f"config field `rope_theta` must be a positive number, got {shorten(self.rope_theta)}")
        if not (_is_int(self.max_position_embeddings) and self.max_position_embeddings > 0):
            raise ConfigError(
                f"config field `max_position_embeddings` must be a positive integer, got "
                f"{shorten(self.max_position_embeddings)}"
            )
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"config field `attention_dropout` must be in [0, 1), got {self.attention_dropout!r}")
        validate_rope_scaling(self.rope_scaling, self.head_dim, self.max_position_embeddings)

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
        """Read `config.json` from a directory (or the file itself); errors name the file."""
        try:
            return cls.from_dict(read_config_json(path), **overrides)
        except ConfigError as exc:
            file = Path(path) / CONFIG_NAME if Path(path).is_dir() else Path(path)
            if str(exc).startswith(str(file)):
                raise
            raise ConfigError(f"{file}: {exc}") from None

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
