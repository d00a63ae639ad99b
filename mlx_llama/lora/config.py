"""LoraConfig: the fields of PEFT's LoraConfig that mlx-llama honours, read from and written to adapter_config.json."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jsonio import read_json_object

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BIAS_MODES = ("none", "all", "lora_only")
# PEFT task types -> our head class names (what `AutoPeftModelFor...` would build).
TASK_TYPES = {
    "CAUSAL_LM": "LlamaForCausalLM",
    "SEQ_CLS": "LlamaForSequenceClassification",
    "TOKEN_CLS": "LlamaForTokenClassification",
    "QUESTION_ANS": "LlamaForQuestionAnswering",
    "FEATURE_EXTRACTION": "LlamaModel",
}
# The heads PEFT adds to `modules_to_save` for each task type (trained and saved with the adapter).
TASK_HEADS = {"SEQ_CLS": ["classifier", "score"], "TOKEN_CLS": ["classifier", "score"], "QUESTION_ANS": ["qa_outputs"]}
# Options of PEFT's LoraConfig that change the computation and that we do not implement: refused, never ignored.
UNSUPPORTED = {
    "layers_to_transform": None,
    "layer_replication": None,
    "fan_in_fan_out": False,
    "lora_bias": False,
    "use_qalora": False,
    "target_parameters": None,
    "trainable_token_indices": None,
    "alora_invocation_tokens": None,
}


@dataclass
class LoraConfig:
    """LoRA hyper-parameters with PEFT's names and defaults (r=8, alpha=8, no dropout, no bias)."""

    r: int = 8
    lora_alpha: float = 8
    target_modules: list[str] | str | None = field(default_factory=lambda: ["q_proj", "v_proj"])
    lora_dropout: float = 0.0
    bias: str = "none"
    task_type: str | None = "CAUSAL_LM"
    use_dora: bool = False
    use_rslora: bool = False
    modules_to_save: list[str] | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    exclude_modules: list[str] | str | None = None
    base_model_name_or_path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"LoRA bias must be one of {', '.join(BIAS_MODES)}, got {self.bias!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ConfigError(f"task_type {self.task_type!r} is not supported; known: {', '.join(TASK_TYPES)}")
        if not self.target_modules:
            raise ConfigError("target_modules is empty: name the modules to adapt, e.g. ['q_proj', 'v_proj']")

    def rank_and_alpha(self, name: str) -> tuple[int, float]:
        """r and alpha for module `name`, honouring PEFT's rank_pattern / alpha_pattern (key matches a suffix)."""
        return (
            _pattern_value(self.rank_pattern, name, self.r),
            _pattern_value(self.alpha_pattern, name, self.lora_alpha),
        )

    def head_modules(self) -> list[str]:
        """Modules saved whole with the adapter: `modules_to_save` plus the task head PEFT adds for the task."""
        names = list(self.modules_to_save or []) + TASK_HEADS.get(self.task_type or "", [])
        return list(dict.fromkeys(names))

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = (
            sorted(self.target_modules) if isinstance(self.target_modules, list) else self.target_modules
        )
        d.update(
            peft_type="LORA",
            inference_mode=True,
            init_lora_weights=True,
            fan_in_fan_out=False,
            layers_to_transform=None,
            layers_pattern=None,
            revision=None,
        )
        return d

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / ADAPTER_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_directory(cls, directory: str | Path) -> LoraConfig:
        """Read a PEFT adapter_config.json, refusing other adapter types and options we do not implement."""
        path = Path(directory) / ADAPTER_CONFIG
        if not path.is_file():
            raise ConfigError(f"{directory}: no {ADAPTER_CONFIG}; expected a PEFT LoRA adapter directory")
        raw = read_json_object(path)
        if raw.get("peft_type", "LORA") != "LORA":
            raise ConfigError(f"{path}: peft_type {raw.get('peft_type')!r} is not supported; expected 'LORA'")
        for key, default in UNSUPPORTED.items():
            if raw.get(key, default) not in (default, [], {}):
                raise ConfigError(f"{path}: {key}={raw[key]!r} is not supported by mlx-llama")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in raw.items() if k in known}
        if isinstance(kwargs.get("target_modules"), list):
            kwargs["target_modules"] = list(kwargs["target_modules"])
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    for key, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", name):
            return value
    return default


def matches_target(config: LoraConfig, name: str, layer_is_linear: bool, is_output_head: bool) -> bool:
    """PEFT's rule: a list matches a module name or a dotted suffix of it, a string is a full regex match,
    'all-linear' is every Linear except the output layer."""
    excluded = config.exclude_modules
    if excluded and _name_matches(excluded, name):
        return False
    targets = config.target_modules
    if targets == "all-linear" or (isinstance(targets, list) and targets == ["all-linear"]):
        return layer_is_linear and not is_output_head
    return _name_matches(targets, name)


def _name_matches(targets: list[str] | str, name: str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)
