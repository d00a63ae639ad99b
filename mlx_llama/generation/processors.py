"""Logits processors that look at the ids generated so far (Transformers' semantics), and the chooser that
feeds them: `no_repeat_ngram_size`, `bad_words_ids`, `min_length` / `min_new_tokens`.

Each processor takes the ids so far (host numpy [rows, length], prompt included, pads included) and
float32 scores [rows, vocab], and returns the scores with banned tokens set to -inf. They need the ids on
the host, so a generation that uses one reads each token back before building the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np

from ..errors import ConfigError
from .sampling import NEG_INF, TokenChooser

HistoryProcessor = Callable[[np.ndarray, mx.array], mx.array]


def _ban(scores: mx.array, banned: list[list[int]]) -> mx.array:
    """Set scores[row, token] = -inf for every token in banned[row]."""
    if not any(banned):
        return scores
    mask = np.zeros(scores.shape, dtype=bool)
    for row, tokens in enumerate(banned):
        mask[row, [t for t in tokens if 0 <= t < scores.shape[1]]] = True
    return mx.where(mx.array(mask), NEG_INF, scores)


def no_repeat_ngram(size: int) -> HistoryProcessor:
    """Ban every token that would complete an n-gram already present in the row (prompt included)."""
    if size <= 0:
        raise ConfigError(f"no_repeat_ngram_size must be a positive integer, got {size}")

    def process(ids: np.ndarray, scores: mx.array) -> mx.array:
        length = ids.shape[1]
        if length + 1 < size:
            return scores
        banned = []
        for row in ids.tolist():
            prefix = tuple(row[length - size + 1 :]) if size > 1 else ()
            starts = range(length - size + 1)
            banned.append([row[i + size - 1] for i in starts if tuple(row[i : i + size - 1]) == prefix])
        return _ban(scores, banned)

    return process


def bad_words(bad_words_ids: Sequence[Sequence[int]], eos: Sequence[int]) -> HistoryProcessor:
    """Ban single tokens always, and the last token of a longer sequence when the row ends with the rest."""
    if not bad_words_ids or any(not seq or any(int(t) < 0 for t in seq) for seq in bad_words_ids):
        raise ConfigError(f"bad_words_ids must be a non-empty list of non-empty id lists, got {bad_words_ids}")
    # As Transformers, a lone eos id is never banned (that would make generation unable to stop).
    sequences = [[int(t) for t in seq] for seq in bad_words_ids if [int(t) for t in seq] not in [[e] for e in eos]]
    static = [seq[0] for seq in sequences if len(seq) == 1]

    def process(ids: np.ndarray, scores: mx.array) -> mx.array:
        banned = []
        for row in ids.tolist():
            tokens = list(static)
            for seq in sequences:
                prefix = seq[:-1]
                if prefix and len(row) >= len(prefix) and row[len(row) - len(prefix) :] == prefix:
                    tokens.append(seq[-1])
            banned.append(tokens)
        return _ban(scores, banned)

    return process


def min_length(minimum: int, eos: Sequence[int], prompt_len: int = 0) -> HistoryProcessor:
    """Ban the eos ids while the row has fewer than `minimum` ids (counted after `prompt_len` ids)."""

    def process(ids: np.ndarray, scores: mx.array) -> mx.array:
        if ids.shape[1] - prompt_len >= minimum:
            return scores
        return _ban(scores, [list(eos)] * ids.shape[0])

    return process


def history_processors(options, eos: Sequence[int], prompt_len: int) -> list[HistoryProcessor]:
    """The processors the options ask for, in Transformers' order."""
    out: list[HistoryProcessor] = []
    if options.no_repeat_ngram_size:
        out.append(no_repeat_ngram(int(options.no_repeat_ngram_size)))
    if options.bad_words_ids is not None:
        out.append(bad_words(options.bad_words_ids, eos))
    if options.min_length and eos:
        out.append(min_length(int(options.min_length), eos))
    if options.min_new_tokens and eos:
        out.append(min_length(int(options.min_new_tokens), eos, prompt_len))
    return out


class HistoryChooser(TokenChooser):
    """A TokenChooser that also runs history processors, and records raw logits and final scores per step.

    It keeps its own id history (the prompt, then every chosen token); finished rows then differ from
    Transformers' pad-filled rows, which only changes rows whose tokens are replaced by pads anyway.
    """

    def __init__(
        self,
        params,
        seed: int | None,
        prompt: np.ndarray,
        processors: Sequence[HistoryProcessor] = (),
        record_scores: bool = False,
        record_logits: bool = False,
    ) -> None:
        super().__init__(params, seed)
        self.processors = list(processors)
        self.history = prompt.astype(np.int64)
        self.record_scores, self.record_logits = record_scores, record_logits
        self.scores: list[mx.array] = []
        self.logits: list[mx.array] = []
        self._pending: mx.array | None = None

    def __call__(self, logits: mx.array, seen: mx.array | None = None) -> mx.array:
        logits = logits.astype(mx.float32)
        if self.processors:
            if self._pending is not None:  # the previous step's token, needed on the host now
                self.history = np.concatenate([self.history, np.array(self._pending)[:, None]], axis=1)
            scores = self.process(logits, seen)
            for processor in self.processors:
                scores = processor(self.history, scores)
        else:
            scores = self.process(logits, seen)
        token = self.choose(scores)
        self._pending = token
        if self.record_logits:
            self.logits.append(logits)
        if self.record_scores:
            self.scores.append(scores)
        return token
