"""Logits processors and token samplers with Transformers' semantics.

Every processor takes and returns float32 logits of shape [batch, vocab]; removed tokens become -inf.
The order used for sampling is Transformers' own: repetition penalty, then temperature -> top-k ->
top-p -> min-p (mlx-lm and llama.cpp apply the temperature last, which keeps a different nucleus).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx

from ..errors import ConfigError

NEG_INF = float("-inf")

Processor = Callable[[mx.array], mx.array]


def apply_temperature(logits: mx.array, temperature: float) -> mx.array:
    """Divide the logits by the temperature (Transformers' TemperatureLogitsWarper)."""
    return logits / temperature


def apply_top_k(logits: mx.array, top_k: int, min_tokens_to_keep: int = 1) -> mx.array:
    """Keep the tokens scoring at least the k-th largest score; ties at the threshold are kept."""
    k = min(max(top_k, min_tokens_to_keep), logits.shape[-1])
    threshold = mx.topk(logits, k, axis=-1).min(axis=-1, keepdims=True)
    return mx.where(logits < threshold, NEG_INF, logits)


def apply_top_p(logits: mx.array, top_p: float, min_tokens_to_keep: int = 1) -> mx.array:
    """Nucleus filtering: drop tokens whose ascending cumulative probability is <= 1 - top_p."""
    order = mx.argsort(logits, axis=-1)
    ascending = mx.take_along_axis(logits, order, axis=-1)
    cumulative = mx.cumsum(mx.softmax(ascending, axis=-1), axis=-1)
    remove_sorted = cumulative <= (1.0 - top_p)
    # The highest min_tokens_to_keep tokens sit at the end of the ascending order.
    vocab = logits.shape[-1]
    never = mx.arange(vocab) >= vocab - min_tokens_to_keep
    remove_sorted = mx.logical_and(remove_sorted, mx.logical_not(never))
    remove = mx.put_along_axis(mx.zeros(logits.shape, dtype=mx.bool_), order, remove_sorted, axis=-1)
    return mx.where(remove, NEG_INF, logits)


def apply_min_p(logits: mx.array, min_p: float, min_tokens_to_keep: int = 1) -> mx.array:
    """Drop tokens whose probability is below min_p times the top token's probability."""
    probs = mx.softmax(logits, axis=-1)
    remove = probs < min_p * probs.max(axis=-1, keepdims=True)
    if min_tokens_to_keep > 1:
        k = min(min_tokens_to_keep, logits.shape[-1])
        kth = mx.topk(logits, k, axis=-1).min(axis=-1, keepdims=True)
        remove = mx.logical_and(remove, logits < kth)
    return mx.where(remove, NEG_INF, logits)


def apply_repetition_penalty(logits: mx.array, seen: mx.array, penalty: float) -> mx.array:
    """CTRL penalty on every token seen so far: positive scores are divided, negative ones multiplied.

    `seen` is a [batch, vocab] boolean mask, so the cost per step does not grow with the history
    (Transformers penalizes the whole `input_ids`, not a short window as mlx-lm does).
    """
    penalized = mx.where(logits < 0, logits * penalty, logits / penalty)
    return mx.where(seen, penalized, logits)


def seen_mask(tokens: mx.array, vocab_size: int) -> mx.array:
    """[batch, vocab] boolean mask of the ids present in each row of `tokens` ([batch, length])."""
    batch = tokens.shape[0]
    mask = mx.zeros((batch, vocab_size), dtype=mx.bool_)
    if tokens.shape[-1] == 0:
        return mask
    ones = mx.ones(tokens.shape, dtype=mx.bool_)
    return mx.put_along_axis(mask, tokens.astype(mx.int32), ones, axis=-1)


def mark_seen(seen: mx.array, token: mx.array) -> mx.array:
    """Add one new token per row ([batch]) to the seen mask."""
    return mx.put_along_axis(
        seen, token.astype(mx.int32)[:, None], mx.ones((seen.shape[0], 1), dtype=mx.bool_), axis=-1
    )


@dataclass(frozen=True)
class SamplingParams:
    """What to do with next-token logits. `do_sample=False` means greedy (argmax) after the penalty.

    Defaults are Transformers' GenerationConfig defaults (top_k=50 is on when sampling).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if self.do_sample and not self.temperature > 0:
            raise ConfigError(
                f"temperature must be > 0 when sampling (got {self.temperature}); use do_sample=False "
                "(or --temp 0 on the command line) for greedy decoding"
            )
        if self.top_k is not None and self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in [0, 1], got {self.top_p}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ConfigError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.min_tokens_to_keep < 1:
            raise ConfigError(f"min_tokens_to_keep must be >= 1, got {self.min_tokens_to_keep}")

    @classmethod
    def from_temperature(
        cls,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
    ) -> SamplingParams:
        """CLI-style parameters: temperature 0 means greedy; 0 disables top_k and min_p."""
        return cls(
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_k=top_k or None,
            top_p=top_p,
            min_p=min_p or None,
            repetition_penalty=repetition_penalty,
        )

    def warpers(self) -> list[Processor]:
        """The sampling warpers, in Transformers' order; empty for greedy decoding."""
        if not self.do_sample:
            return []
        keep = self.min_tokens_to_keep
        out: list[Processor] = []
        if self.temperature != 1.0:
            out.append(lambda x, t=self.temperature: apply_temperature(x, t))
        if self.top_k:
            out.append(lambda x, k=self.top_k: apply_top_k(x, k, keep))
        if self.top_p < 1.0:
            out.append(lambda x, p=self.top_p: apply_top_p(x, p, keep))
        if self.min_p is not None:
            out.append(lambda x, p=self.min_p: apply_min_p(x, p, keep))
        return out


class TokenChooser:
    """Turns logits into the next token: penalty -> warpers -> argmax or a seeded categorical draw.

    The random key is explicit and split once per step, so a given seed repeats exactly whatever else
    uses MLX's global random state.
    """

    def __init__(self, params: SamplingParams, seed: int | None = None):
        self.params = params
        self._warpers = params.warpers()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise ConfigError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
        self._key = mx.random.key(seed) if seed is not None else None

    def process(self, logits: mx.array, seen: mx.array | None) -> mx.array:
        """Apply the penalty and the warpers to float32 [batch, vocab] logits."""
        logits = logits.astype(mx.float32)
        if self.params.repetition_penalty != 1.0 and seen is not None:
            logits = apply_repetition_penalty(logits, seen, self.params.repetition_penalty)
        for warp in self._warpers:
            logits = warp(logits)
        return logits

    def choose(self, logits: mx.array) -> mx.array:
        """Pick one token per row ([batch] int32) from processed logits."""
        if not self.params.do_sample:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        if self._key is None:
            return mx.random.categorical(logits, axis=-1).astype(mx.int32)
        self._key, sub = mx.random.split(self._key)
        return mx.random.categorical(logits, axis=-1, key=sub).astype(mx.int32)

    def __call__(self, logits: mx.array, seen: mx.array | None = None) -> mx.array:
        return self.choose(self.process(logits, seen))
