"""Per-row token choice for the batch: OpenAI's options on top of generation.sampling's TokenChooser.

Order: logit_bias, presence/frequency penalties (over the tokens generated so far), then TokenChooser's
repetition penalty (prompt + generated, as `generate`) and its warpers (temperature, top-k, top-p, min-p),
then, for `response_format`, the mask of tokens that keep the output valid JSON. Logprobs are those of the
model's own distribution (log-softmax of the raw logits), as OpenAI reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..generation.sampling import SamplingParams, TokenChooser, mark_seen, seen_mask
from .json_constraint import JsonRecognizer, closing_text

JSON_CANDIDATES = 256  # how many of the best-scoring tokens a sampled JSON step considers
CLOSE_MARGIN = 64  # within this many tokens of the shortest closing, candidates are checked against the budget


@dataclass
class SamplingOptions:
    """The sampling fields of a validated request (OpenAI defaults)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    logprobs: int | None = None  # None: off; else how many top alternatives per token
    recognizer: JsonRecognizer | None = None


@dataclass
class Pick:
    """A chosen token (lazy until the scheduler evaluates the step) and its logprob arrays when asked for."""

    token: mx.array
    logprob: mx.array | None = None
    top_ids: mx.array | None = None
    top_logprobs: mx.array | None = None
    index: int = 0  # the row's entry in `token` (one array serves a whole batched greedy group)

    def arrays(self) -> list[mx.array]:
        return [a for a in (self.token, self.logprob, self.top_ids, self.top_logprobs) if a is not None]


def pick_greedy_rows(samplers: list[RowSampler], logits: mx.array) -> list[Pick]:
    """One batched argmax for plain greedy rows (logits [len(samplers), V]); the same choice as `pick`."""
    logits = logits.astype(mx.float32)
    if any(s.bias is not None for s in samplers):
        zeros = mx.zeros((1, logits.shape[-1]), dtype=mx.float32)
        logits = logits + mx.concatenate([zeros if s.bias is None else s.bias for s in samplers], axis=0)
    tokens = mx.argmax(logits, axis=-1).astype(mx.int32)
    return [Pick(tokens, index=i) for i in range(len(samplers))]


class RowSampler:
    """Chooses one row's tokens; `accept(token)` must follow every pick."""

    def __init__(
        self,
        options: SamplingOptions,
        prompt: list[int],
        vocab: int,
        eos: set[int],
        texts: list[str | None] | None = None,
        seed_offset: int = 0,
    ) -> None:
        self.options, self.vocab, self.eos, self.texts = options, vocab, eos, texts
        params = SamplingParams.from_temperature(
            options.temperature, options.top_k, options.top_p, options.min_p, options.repetition_penalty
        )
        seed = None if options.seed is None else options.seed + seed_offset
        self.chooser = TokenChooser(params, seed)
        self.seen = seen_mask(mx.array([prompt], dtype=mx.int32), vocab) if params.repetition_penalty != 1.0 else None
        self.counts = None
        if options.presence_penalty or options.frequency_penalty:
            self.counts = mx.zeros((1, vocab), dtype=mx.float32)
        self.bias = None
        if options.logit_bias:
            bias = np.zeros((1, vocab), dtype=np.float32)
            for token, value in options.logit_bias.items():
                bias[0, token] = value
            self.bias = mx.array(bias)
        self.recognizer = options.recognizer
        self.json_state = self.recognizer.start() if self.recognizer is not None else None

    @property
    def plain_greedy(self) -> bool:
        """Argmax of logits (+ logit_bias) alone: such rows are chosen together, in one batched op."""
        o = self.options
        return (
            not self.chooser.params.do_sample
            and self.seen is None
            and self.counts is None
            and self.recognizer is None
            and o.logprobs is None
        )

    def _process(self, logits: mx.array) -> mx.array:
        logits = logits.astype(mx.float32)
        if self.bias is not None:
            logits = logits + self.bias
        if self.counts is not None:
            o = self.options
            logits = logits - o.presence_penalty * (self.counts > 0) - o.frequency_penalty * self.counts
        return self.chooser.process(logits, self.seen)

    def pick(self, logits: mx.array, remaining: int | None = None) -> Pick:
        """Choose from one row's logits [1, V]; lazy unless a JSON mask needs the scores on the host.

        `remaining` is how many tokens the row may still produce, this one included: JSON output closes
        itself in time.
        """
        processed = self._process(logits)
        if self.recognizer is not None:
            processed = self._json_mask(processed, logits, remaining)
        token = self.chooser.choose(processed)
        pick = Pick(token)
        k = self.options.logprobs
        if k is not None:
            raw = logits.astype(mx.float32)
            logprobs = raw - mx.logsumexp(raw, axis=-1, keepdims=True)
            pick.logprob = mx.take_along_axis(logprobs, token[:, None], axis=-1)[0, 0]
            if k > 0:
                top = mx.argsort(-logprobs[0])[:k]
                pick.top_ids, pick.top_logprobs = top, logprobs[0][top]
        return pick

    def accept(self, token: int) -> None:
        """Record the chosen token (penalty state, JSON state)."""
        if self.seen is not None:
            self.seen = mark_seen(self.seen, mx.array([token], dtype=mx.int32))
        if self.counts is not None:
            self.counts = self.counts + (mx.arange(self.vocab) == token)[None]
        if self.recognizer is not None and token not in self.eos:
            self.json_state = self.recognizer.feed(self.json_state, self.texts[token])

    @property
    def json_done(self) -> bool:
        return self.recognizer is not None and self.recognizer.is_done(self.json_state)

    def _valid(self, token: int, budget: int | None = None) -> bool:
        """Whether the token keeps the output valid JSON that can still be closed within `budget` more tokens."""
        if token in self.eos:
            return self.recognizer.is_complete(self.json_state)
        text = self.texts[token] if token < len(self.texts) else None
        if not text:
            return False
        state = self.recognizer.feed(self.json_state, text)
        if state is None:
            return False
        return budget is None or len(closing_text(state)) <= budget

    def _closing_tokens(self, closing: str) -> list[int]:
        if not closing:
            return sorted(self.eos)
        return [i for i, t in enumerate(self.texts) if t and closing.startswith(t)]

    def _json_mask(self, processed: mx.array, raw: mx.array, remaining: int | None) -> mx.array:
        """Keep only tokens that extend the output as valid JSON: the best ones first, so few are tried.

        When the budget is down to the shortest closing text, only tokens spelling that text are allowed.
        """
        scores = np.array(processed[0], dtype=np.float32)
        budget = None
        if remaining is not None:
            closing = closing_text(self.json_state)
            if remaining <= len(closing) or (not closing and remaining <= 1):
                allowed = self._closing_tokens(closing)
                masked = np.full(scores.shape, -np.inf, dtype=np.float32)
                masked[allowed] = np.where(np.isfinite(scores[allowed]), scores[allowed], 0.0)
                return mx.array(masked)[None]
            if remaining <= len(closing) + CLOSE_MARGIN:  # near the end: no token may outgrow the budget
                budget = remaining - 1
        order = np.argsort(-scores, kind="stable")
        finite = order[np.isfinite(scores[order])]
        greedy = not self.chooser.params.do_sample
        valid: list[int] = []
        for tried, token in enumerate(finite, start=1):
            if self._valid(int(token), budget):
                valid.append(int(token))
                if greedy or len(valid) >= JSON_CANDIDATES:
                    break
            if valid and tried >= 4 * JSON_CANDIDATES:
                break
        if not valid:  # the warpers cut every valid token: fall back to the best valid one by raw score
            raw_scores = np.array(raw[0].astype(mx.float32))
            order = np.argsort(-raw_scores, kind="stable")
            valid = next(([int(t)] for t in order if self._valid(int(t), budget)), [])
            if not valid:
                valid = self._closing_tokens(closing_text(self.json_state))[:1]
            scores = np.zeros_like(scores)
        masked = np.full(scores.shape, -np.inf, dtype=np.float32)
        masked[valid] = scores[valid]
        return mx.array(masked)[None]
