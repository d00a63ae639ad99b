"""The model outputs: dataclasses with Transformers' names and field order, on one base."""

from __future__ import annotations

from dataclasses import dataclass, fields

import mlx.core as mx

from ..cache import KVCache


@dataclass
class ModelOutput:
    """What every output shares: `to_tuple()` (what `return_dict=False` returns), as Transformers' ModelOutput."""

    def to_tuple(self) -> tuple:
        """The non-None fields in order."""
        values = (getattr(self, f.name) for f in fields(self))
        return tuple(v for v in values if v is not None)


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: mx.array
    past_key_values: list[KVCache] | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: mx.array | None = None
    logits: mx.array | None = None
    past_key_values: list[KVCache] | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: mx.array | None = None
    logits: mx.array | None = None
    past_key_values: list[KVCache] | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: mx.array | None = None
    start_logits: mx.array | None = None
    end_logits: mx.array | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: mx.array | None = None
    logits: mx.array | None = None
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None
