"""OpenLlamaConfig: the fields, defaults and validation of Transformers' deprecated OpenLlamaConfig (4.57).

Open-Llama is LLaMA plus a few switches, so the config is a LlamaConfig subclass. Open-Llama has no GQA,
bias, head_dim or attention-dropout fields: if a config.json carries them, Transformers keeps them as
unused attributes, and so do we (in `extra`, written back on save) while the model ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import LlamaConfig
from .errors import ConfigError, shorten

# LlamaConfig fields Open-Llama does not have -> the value that means "not used".
_LLAMA_ONLY: dict[str, Any] = {
    "num_key_value_heads": None,
    "head_dim": None,
    "attention_bias": False,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "attention_dropout": 0.0,
}
_OPEN_LLAMA_ROPE_TYPES = ("linear", "dynamic")


@dataclass
class OpenLlamaConfig(LlamaConfig):
    """Configuration of an Open-Llama model (s-JoL/Open-Llama-V1 shapes by default)."""

    vocab_size: int = 100000
    pad_token_id: int | None = 0
    use_memory_efficient_attention: bool = True
    hidden_dropout_prob: float = 0.1
    attention_dropout_prob: float = 0.1
    use_stable_embedding: bool = True
    shared_input_output_embedding: bool = True
    model_type: str = "open-llama"

    def __post_init__(self) -> None:
        for name, unused in _LLAMA_ONLY.items():
            value = getattr(self, name)
            if value != unused and not (name == "num_key_value_heads" and value == self.num_attention_heads):
                self.extra[name] = value
            setattr(self, name, unused)
        # Transformers accepts the misspelled key of early Open-Llama configs, and it wins over the right one.
        if "use_memorry_efficient_attention" in self.extra:
            self.use_memory_efficient_attention = self.extra.pop("use_memorry_efficient_attention")
        # Checked before LlamaConfig adds a `rope_type` key, since Open-Llama wants exactly `type` and `factor`.
        check_open_llama_rope_scaling(self.rope_scaling)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        for name in ("use_memory_efficient_attention", "use_stable_embedding", "shared_input_output_embedding"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field `{name}` must be true or false, got {shorten(getattr(self, name))}")
        for name in ("hidden_dropout_prob", "attention_dropout_prob"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ConfigError(f"config field `{name}` must be a number in [0, 1), got {p!r}")

    def to_dict(self) -> dict[str, Any]:
        """Transformers' open-llama config.json: no Llama-only fields, `rope_scaling` with its two keys only."""
        out = super().to_dict()
        for name in _LLAMA_ONLY:
            if name not in self.extra:
                out.pop(name, None)
        if self.rope_scaling is not None and "type" in self.rope_scaling:
            out["rope_scaling"] = {k: v for k, v in self.rope_scaling.items() if k != "rope_type"}
        return out


def check_open_llama_rope_scaling(rope_scaling: Any) -> None:
    """Transformers' strict Open-Llama rule: {"type": "linear" | "dynamic", "factor": float > 1}, nothing else."""
    if rope_scaling is None:
        return
    if not isinstance(rope_scaling, dict) or len(rope_scaling) != 2:
        raise ConfigError(
            "config field `rope_scaling` must be a dictionary with two fields, `type` and `factor`, "
            f"got {rope_scaling!r}"
        )
    kind = rope_scaling.get("type")
    if kind not in _OPEN_LLAMA_ROPE_TYPES:
        raise ConfigError(
            f"config field `rope_scaling.type` must be one of {list(_OPEN_LLAMA_ROPE_TYPES)}, got {kind!r}"
        )
    factor = rope_scaling.get("factor")
    if not isinstance(factor, float) or factor <= 1.0:
        raise ConfigError(f"config field `rope_scaling.factor` must be a float > 1 (e.g. 2.0), got {factor!r}")
