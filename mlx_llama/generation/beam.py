"""Beam search with Transformers' (4.57) rules, so the returned ids are the same.

Each prompt keeps `num_beams` running hypotheses. Per step every running beam proposes its best
continuations (log-probabilities summed along the beam); the best `2 * num_beams` (more with several eos
ids) are split into those that hit a stopping rule (eos, a stop string, the length limit), which may
enter the prompt's list of finished hypotheses scored `sum / generated_length ** length_penalty`, and the
rest, whose best `num_beams` keep running. `early_stopping` decides when a prompt is done: True as soon
as `num_beams` hypotheses finished; False when the best running beam, at its current length, can no
longer beat the worst finished one; "never" with the best possible length instead.

The model runs on MLX; the bookkeeping (a few [batch, beams] arrays) runs on the host in float32, as
Transformers' does in torch, including its -1e9 "removed" scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .loop import padding_positions, prefill
from .sampling import apply_repetition_penalty, seen_mask

REMOVED = np.float32(-1.0e9)
ScoreHook = Callable[[np.ndarray, mx.array], mx.array]


@dataclass
class BeamSettings:
    num_beams: int
    new_tokens: int
    eos: Sequence[int]
    fill_id: int
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    repetition_penalty: float = 1.0


@dataclass
class BeamResult:
    sequences: np.ndarray  # [batch * num_return_sequences, prompt + generated]
    sequences_scores: np.ndarray
    beam_indices: np.ndarray
    scores: list[np.ndarray]  # processed log-probabilities per step, [batch * num_beams, vocab]
    logits: list[np.ndarray]


def reorder_cache(cache: Sequence, index: mx.array) -> None:
    """Make row i of every layer's cache the old row index[i] (beams were reselected)."""
    for layer in cache:
        if hasattr(layer, "reorder"):
            layer.reorder(index)
        elif getattr(layer, "keys", None) is not None:
            layer.keys, layer.values = layer.keys[index], layer.values[index]


class _Stepper:
    """The model side: prefill the beams' prompts, then one token per beam per step."""

    def __init__(self, model, ids: np.ndarray, mask: np.ndarray, prefill_step_size: int) -> None:
        self.model, self.cache = model, model.make_cache()
        self.mask = None if mask.all() else mx.array(mask.astype(np.int32))
        positions = None if self.mask is None else padding_positions(self.mask)
        self.logits = prefill(
            model, self.cache, mx.array(ids.astype(np.int32)), self.mask, positions, prefill_step_size
        )
        self.next_position = None if positions is None else positions[:, -1:] + 1

    def step(self, tokens: np.ndarray, order: np.ndarray) -> mx.array:
        reorder_cache(self.cache, mx.array(order.astype(np.int32)))
        step_mask = None
        if self.mask is not None:
            self.mask = mx.concatenate([self.mask, mx.ones((self.mask.shape[0], 1), self.mask.dtype)], axis=1)
            step_mask = self.mask.astype(mx.bool_)[:, None, None, :]
        out = self.model(
            mx.array(tokens.astype(np.int32))[:, None],
            attention_mask=step_mask,
            position_ids=self.next_position,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        if self.next_position is not None:
            self.next_position = self.next_position + 1
        return out.logits[:, -1, :]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, best first (ties: lower index first)."""
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, index.reshape(index.shape + (1,) * (values.ndim - 2)), axis=1)


class _Beams:
    """Running and finished hypotheses of every prompt, [batch, beams, ...] arrays."""

    def __init__(self, ids: np.ndarray, s: BeamSettings) -> None:
        batch, self.prompt_len = ids.shape[0] // s.num_beams, ids.shape[1]
        self.s, self.batch, self.max_len = s, batch, self.prompt_len + s.new_tokens
        self.running = np.full((batch, s.num_beams, self.max_len), s.fill_id, dtype=np.int64)
        self.running[:, :, : self.prompt_len] = ids.reshape(batch, s.num_beams, -1)
        self.finished = self.running.copy()
        self.running_scores = np.zeros((batch, s.num_beams), np.float32)
        self.running_scores[:, 1:] = REMOVED
        self.finished_scores = np.full((batch, s.num_beams), REMOVED, np.float32)
        self.is_finished = np.zeros((batch, s.num_beams), bool)
        self.can_improve = np.ones((batch, 1), bool)
        self.running_origin = np.full((batch, s.num_beams, s.new_tokens), -1, np.int64)
        self.finished_origin = self.running_origin.copy()
        self.keep = max(2, 1 + len(s.eos)) * s.num_beams
        self.top_mask = np.arange(self.keep) < s.num_beams
        self.cur = self.prompt_len

    def advance(self, log_probs: np.ndarray, stop_hit: Callable[[np.ndarray], bool] | None) -> tuple[bool, np.ndarray]:
        """One step from processed log-probs [batch*beams, vocab]; returns (done, cache order for the next)."""
        s, B, K = self.s, self.batch, self.s.num_beams
        vocab = log_probs.shape[-1]
        total = (log_probs.reshape(B, K, vocab) + self.running_scores[:, :, None]).reshape(B, K * vocab)
        top = _top(total, self.keep)
        top_scores = np.take_along_axis(total, top, axis=1)
        source, token = top // vocab, top % vocab
        seqs = _gather(self.running, source)
        seqs[:, :, self.cur] = token
        origin = _gather(self.running_origin, source)
        origin[:, :, self.cur - self.prompt_len] = source + np.arange(B)[:, None] * K
        hits = np.isin(token, list(s.eos)) | (self.cur + 1 >= self.max_len)
        if stop_hit is not None:
            hits |= np.array([[stop_hit(seqs[b, j, : self.cur + 1]) for j in range(self.keep)] for b in range(B)])
        self._keep_running(top_scores, seqs, origin, hits)
        self._update_finished(top_scores, seqs, origin, hits)
        order = self.running_origin[:, :, self.cur - self.prompt_len].reshape(-1)
        self.cur += 1
        self._check_improvable()
        open_beams = not (self.is_finished.all() and s.early_stopping is True)
        done = not (self.can_improve.any() and open_beams and not hits.all())
        return done, order

    def _keep_running(self, top_scores, seqs, origin, hits) -> None:
        scores = top_scores + hits.astype(np.float32) * REMOVED
        best = _top(scores, self.s.num_beams)
        self.running, self.running_origin = _gather(seqs, best), _gather(origin, best)
        self.running_scores = np.take_along_axis(scores, best, axis=1)

    def _update_finished(self, top_scores, seqs, origin, hits) -> None:
        s = self.s
        just_finished = hits & self.top_mask[None, :]
        scores = top_scores / np.float32((self.cur + 1 - self.prompt_len) ** s.length_penalty)
        full = self.is_finished.all(axis=-1, keepdims=True) & (s.early_stopping is True)
        scores = scores + full.astype(np.float32) * REMOVED
        scores = scores + (~self.can_improve).astype(np.float32) * REMOVED
        scores = scores + (~just_finished).astype(np.float32) * REMOVED
        merged_scores = np.concatenate([self.finished_scores, scores], axis=1)
        best = _top(merged_scores, s.num_beams)
        self.finished = _gather(np.concatenate([self.finished, seqs], axis=1), best)
        self.finished_origin = _gather(np.concatenate([self.finished_origin, origin], axis=1), best)
        self.is_finished = np.take_along_axis(np.concatenate([self.is_finished, just_finished], axis=1), best, 1)
        self.finished_scores = np.take_along_axis(merged_scores, best, axis=1)

    def _check_improvable(self) -> None:
        s = self.s
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            length = self.max_len - self.prompt_len
        else:
            length = self.cur - self.prompt_len
        best_running = self.running_scores[:, :1] / np.float32(length**s.length_penalty)
        worst = np.where(self.is_finished, self.finished_scores.min(axis=1, keepdims=True), REMOVED)
        self.can_improve &= (best_running > worst).any(axis=-1, keepdims=True)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.s.num_return_sequences
        seqs = self.finished[:, :n].reshape(self.batch * n, -1)
        origin = self.finished_origin[:, :n].reshape(self.batch * n, -1)
        generated = int((origin + 1).astype(bool).sum(axis=1).max())
        return seqs[:, : self.prompt_len + generated], self.finished_scores[:, :n].reshape(-1), origin[:, :generated]


def beam_search(
    model,
    ids: np.ndarray,
    mask: np.ndarray,
    settings: BeamSettings,
    processors: Sequence[ScoreHook] = (),
    stop_hit: Callable[[np.ndarray], bool] | None = None,
    prefill_step_size: int = 512,
    record: tuple[bool, bool] = (False, False),
) -> BeamResult:
    """Beam search over a left-padded batch ([batch, T] ids and mask); `record` = (scores, logits)."""
    ids, mask = np.repeat(ids, settings.num_beams, axis=0), np.repeat(mask, settings.num_beams, axis=0)
    stepper, beams = _Stepper(model, ids, mask, prefill_step_size), _Beams(ids, settings)
    logits, scores_log, logits_log = stepper.logits, [], []
    while True:
        logits = logits.astype(mx.float32)
        log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        history = beams.running[:, :, : beams.cur].reshape(ids.shape[0], -1)
        if settings.repetition_penalty != 1.0:
            seen = seen_mask(mx.array(history.astype(np.int32)), log_probs.shape[-1])
            log_probs = apply_repetition_penalty(log_probs, seen, settings.repetition_penalty)
        for process in processors:
            log_probs = process(history, log_probs)
        host = np.array(log_probs)
        if record[0]:
            scores_log.append(host)
        if record[1]:
            logits_log.append(np.array(logits))
        done, order = beams.advance(host, stop_hit)
        if done:
            break
        logits = stepper.step(beams.running[:, :, beams.cur - 1].reshape(-1), order)
    sequences, sequence_scores, origin = beams.result()
    return BeamResult(sequences, sequence_scores, origin, scores_log, logits_log)
