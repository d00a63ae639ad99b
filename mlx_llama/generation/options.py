"""The generation settings `model.generate` honours, resolved as Transformers does.

Order (later wins): Transformers' GenerationConfig defaults, the model's `generation_config` (when it has
one), the `generation_config=` argument, then keyword arguments. A keyword we do not know is an error; a
field of a passed GenerationConfig that we cannot honour is a warning naming it, never silently dropped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import ConfigError


@dataclass
class GenerationOptions:
    """Transformers' GenerationConfig fields that mlx-llama implements, with Transformers' defaults."""

    max_length: int | None = None
    max_new_tokens: int | None = None
    min_length: int = 0
    min_new_tokens: int | None = None
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list[list[int]] | None = None
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    stop_strings: str | list[str] | None = None
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False
    use_cache: bool = True  # False gives the same ids in Transformers (only slower); decoding here always caches
    cache_implementation: str | None = None
    cache_config: dict | None = None
    num_assistant_tokens: int = 5
    prompt_lookup_num_tokens: int | None = None

    def validate(self) -> None:
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise ConfigError(
                f"num_beams ({self.num_beams}) and num_return_sequences ({self.num_return_sequences}) must be >= 1"
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ConfigError(f"num_return_sequences={self.num_return_sequences} must be <= num_beams={self.num_beams}")
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences > 1:
            raise ConfigError(
                "greedy decoding returns one sequence per prompt: num_return_sequences > 1 needs "
                "num_beams >= num_return_sequences or do_sample=True"
            )
        if self.num_beams > 1 and self.do_sample:
            raise ConfigError(
                "beam sampling (num_beams > 1 with do_sample=True) is not implemented; "
                "use do_sample=False for beam search or num_beams=1 for sampling"
            )
        if self.early_stopping not in (True, False, "never"):
            raise ConfigError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if self.cache_implementation not in (None, "static", "dynamic", "quantized", "sliding_window", "rotating"):
            raise ConfigError(
                f"cache_implementation={self.cache_implementation!r} is not available: mlx-llama's "
                "KV cache is preallocated (as 'static'); use None, 'static', 'dynamic', "
                "'quantized' or 'sliding_window'"
            )


# GenerationConfig fields that change nothing here (metadata, or outputs we never build).
_HARMLESS = {
    "transformers_version",
    "decoder_start_token_id",
    "output_attentions",
    "output_hidden_states",
    "_from_model_config",
    "_commit_hash",
    "_original_object_hash",
    "is_assistant",
    "generation_kwargs",
}
_FIELDS = {f.name for f in fields(GenerationOptions)}
_DEFAULTS = GenerationOptions()


def _non_default_items(config: Any) -> dict[str, Any]:
    """The fields a GenerationConfig-like object sets away from Transformers' defaults."""
    if config is None:
        return {}
    if hasattr(config, "to_diff_dict"):  # a transformers.GenerationConfig
        items = config.to_diff_dict()
    elif isinstance(config, dict):
        items = dict(config)
    else:
        items = {k: v for k, v in vars(config).items() if not k.startswith("_")}
    # GenerationConfig's max_length default of 20 means "20 new tokens", which is our None default as well.
    return {
        k: v
        for k, v in items.items()
        if k not in _FIELDS or (v != getattr(_DEFAULTS, k) and not (k == "max_length" and v == 20))
    }


def resolve_options(model: Any, generation_config: Any, kwargs: dict[str, Any]) -> GenerationOptions:
    """Merge defaults, the model's generation config, a passed one and the keyword arguments."""
    if generation_config is not None and (hasattr(generation_config, "shape") or isinstance(generation_config, list)):
        raise ConfigError(
            "generate()'s second positional argument is generation_config: pass the attention mask "
            "as attention_mask=..."
        )
    unknown = sorted(set(kwargs) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"generate() got unsupported argument(s) {', '.join(unknown)}; supported: "
            f"{', '.join(sorted(_FIELDS))}, plus streamer, tokenizer, seed, prefill_step_size"
        )
    merged: dict[str, Any] = {}
    for source in (getattr(model, "generation_config", None), generation_config):
        for key, value in _non_default_items(source).items():
            if key in _FIELDS:
                merged[key] = value
            elif key not in _HARMLESS and source is generation_config:
                warnings.warn(
                    f"generation_config.{key}={value!r} is not supported by mlx-llama and has no effect", stacklevel=4
                )
    merged.update(kwargs)
    options = replace(GenerationOptions(), **merged)
    if options.temperature == 0.0 and "do_sample" not in kwargs:
        options.do_sample = False  # as Transformers: temperature 0 in a config means greedy
    options.validate()
    return options
