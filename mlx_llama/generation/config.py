"""`GenerationConfig`: the checkpoint's generation_config.json (stop ids, lengths, sampling defaults).

Read on load and attached as `model.generation_config`. `model.generate` takes from it every argument the
caller did not pass, as Transformers does (see `generation.options`); `stream_generate` and the CLI stop at its
eos ids, and the CLI takes its length and sampling defaults when no flag is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jsonio import read_json_object

GENERATION_CONFIG_FILE = "generation_config.json"
DEFAULT_MAX_LENGTH = 20  # Transformers' GenerationConfig.max_length: 20 new tokens when left at this value

_INT = (int,)
_OPT_INT = (int, type(None))
_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "max_length": _INT,
    "max_new_tokens": _OPT_INT,
    "min_new_tokens": _OPT_INT,
    "do_sample": (bool,),
    "temperature": _NUMBER,
    "top_k": _OPT_INT,
    "top_p": _NUMBER,
    "min_p": (int, float, type(None)),
    "repetition_penalty": _NUMBER,
    "bos_token_id": _OPT_INT,
    "eos_token_id": (int, list, type(None)),
    "pad_token_id": _OPT_INT,
}


@dataclass
class GenerationConfig:
    """The fields of Transformers' GenerationConfig that mlx-llama uses; unknown fields are kept in `extra`."""

    max_length: int = DEFAULT_MAX_LENGTH
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = GENERATION_CONFIG_FILE) -> GenerationConfig:
        """Check each known field's type (an error names the field); keep the rest."""
        known: dict[str, Any] = {}
        for key, value in data.items():
            if key not in _TYPES:
                continue
            types = _TYPES[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ConfigError(f"{where}: field {key!r} has the wrong type: {value!r}")
            if key == "eos_token_id" and isinstance(value, list):
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                    raise ConfigError(f"{where}: field 'eos_token_id' must be an id or a list of ids, got {value!r}")
            known[key] = value
        extra = {k: v for k, v in data.items() if k not in _TYPES and k != "transformers_version"}
        return cls(**known, extra=extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, filename: str = GENERATION_CONFIG_FILE) -> GenerationConfig:
        """Read `path/generation_config.json` (or `path` itself when it is the file)."""
        path = Path(path)
        file = path / filename if path.is_dir() else path
        return cls.from_dict(read_json_object(file, ConfigError), str(file))

    @classmethod
    def from_model_config(cls, config: Any) -> GenerationConfig:
        """The ids a model config carries (what Transformers uses when there is no generation_config.json)."""
        ids = {k: getattr(config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        return cls(**{k: v for k, v in ids.items() if v is not None})

    @classmethod
    def for_checkpoint(cls, path: str | Path, config: Any) -> GenerationConfig:
        """generation_config.json when the checkpoint has one, else the model config's ids."""
        file = Path(path) / GENERATION_CONFIG_FILE
        return cls.from_pretrained(file) if file.is_file() else cls.from_model_config(config)

    def to_dict(self) -> dict[str, Any]:
        """Non-default fields (as Transformers writes them) plus the kept unknown ones."""
        default = GenerationConfig()
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if v != getattr(default, k)}
        return {**self.extra, **out}

    def save_pretrained(self, path: str | Path) -> Path:
        """Write `path/generation_config.json`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        out = path / GENERATION_CONFIG_FILE
        out.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return out

    @property
    def eos_token_ids(self) -> list[int]:
        """eos_token_id as a list (empty when unset)."""
        value = self.eos_token_id
        return [] if value is None else [value] if isinstance(value, int) else list(value)

    def __repr__(self) -> str:
        return f"GenerationConfig({self.to_dict()})"


def sampling_defaults(config: GenerationConfig | None) -> dict[str, Any]:
    """stream_generate-style sampling settings from a generation config: its temperature, top_k and top_p when
    it samples (`do_sample`), greedy otherwise; its repetition penalty either way."""
    if config is None:
        return {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}
    sampling = config.do_sample and config.temperature > 0
    return {
        "temperature": float(config.temperature) if sampling else 0.0,
        "top_k": int(config.top_k or 0) if sampling else 0,
        "top_p": float(config.top_p) if sampling else 1.0,
        "repetition_penalty": float(config.repetition_penalty),
    }


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a stream: the tokenizer's eos and every eos id of the model's generation config."""
    ids = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.add(int(eos))
    config = getattr(model, "generation_config", None)
    if isinstance(config, GenerationConfig):
        ids.update(config.eos_token_ids)
    return ids


__all__ = ["GenerationConfig", "sampling_defaults", "stop_ids"]
