"""What `generate(..., return_dict_in_generate=True)` returns, with Transformers' class and field names."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass
class GenerateDecoderOnlyOutput:
    """Greedy / sampling: `scores` are the processed scores per step, `logits` the raw ones ([batch, vocab] each)."""

    sequences: mx.array
    scores: tuple[mx.array, ...] | None = None
    logits: tuple[mx.array, ...] | None = None
    attentions: None = None
    hidden_states: None = None
    past_key_values: None = None

    def __getitem__(self, key: str):
        return getattr(self, key)


@dataclass
class GenerateBeamDecoderOnlyOutput:
    """Beam search: `sequences_scores` are the length-penalised scores of the returned beams."""

    sequences: mx.array
    sequences_scores: mx.array | None = None
    scores: tuple[mx.array, ...] | None = None
    logits: tuple[mx.array, ...] | None = None
    beam_indices: mx.array | None = None
    attentions: None = None
    hidden_states: None = None
    past_key_values: None = None

    def __getitem__(self, key: str):
        return getattr(self, key)
