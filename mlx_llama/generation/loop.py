"""The decode loop: chunked prefill, then one token per step, one step ahead of the host.

Speed comes from three things (mlx-lm's recipe, written anew here):
- prefill runs in chunks and evaluates only the KV cache, so vocab logits are never built for the
  prompt positions (only the final chunk asks for the logits of its last position);
- each step's graph is built and `mx.async_eval`-ed before the host reads the previous token, so the
  device computes token n+1 while Python stops, detokenizes and yields token n;
- the rows' finished state and the repetition-penalty mask stay on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx

from ..token_ids import trusted_ids
from .sampling import TokenChooser, mark_seen, seen_mask
from .wired import wired_limit

ProgressCallback = Callable[[int, int], None]

CLEAR_CACHE_EVERY = 256


def cache_arrays(cache: Sequence) -> list[mx.array]:
    """The arrays holding every layer's keys and values, to evaluate them without the logits."""
    return [a for layer in cache for a in layer.state]


def padding_positions(attention_mask: mx.array) -> mx.array:
    """Per-row positions of a left-padded batch: cumsum(mask) - 1, and 1 at padded slots (as Transformers)."""
    mask = attention_mask.astype(mx.int32)
    positions = mx.cumsum(mask, axis=-1) - 1
    return mx.where(mask == 0, 1, positions)


def prefill(
    model,
    cache: Sequence,
    tokens: mx.array,
    attention_mask: mx.array | None = None,
    position_ids: mx.array | None = None,
    step_size: int = 512,
    progress: ProgressCallback | None = None,
) -> mx.array:
    """Run the prompt ([batch, T], T >= 1) into the cache; return the lazy last-position logits [batch, V].

    `attention_mask` spans the cache's past plus `tokens`; `position_ids` covers only `tokens`.
    """
    total = tokens.shape[1]
    past = attention_mask.shape[1] - total if attention_mask is not None else 0
    start = 0
    while total - start > step_size:
        end = start + step_size
        model(
            tokens[:, start:end],
            attention_mask=None if attention_mask is None else attention_mask[:, : past + end],
            position_ids=None if position_ids is None else position_ids[:, start:end],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        # Only the cache is evaluated: the (unused) logits of this chunk are never computed.
        mx.eval(cache_arrays(cache))
        mx.clear_cache()
        start = end
        if progress is not None:
            progress(start, total)
    out = model(
        tokens[:, start:],
        attention_mask=attention_mask,
        position_ids=None if position_ids is None else position_ids[:, start:],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    if progress is not None:
        progress(total, total)
    return out.logits[:, -1, :]


@dataclass
class Step:
    """One decoded step, read back on the host: a token per row and whether each row is still running."""

    tokens: list[int]
    running: list[bool]
    from_draft: list[bool] | None = None  # speculative decoding: which tokens were accepted drafts


def decode(model, *args, **kwargs) -> Iterator[Step]:
    """`_decode` (below) with the model's memory wired on a Mac while it runs."""
    with wired_limit(model):
        yield from _decode(model, *args, **kwargs)


class _Stepper:
    """One decode step's two halves, holding what persists between steps: the growing attention mask, the
    next positions, the eos ids."""

    def __init__(self, model, cache, chooser: TokenChooser, attention_mask, position_ids, eos_token_ids, pad_token_id):
        self.model, self.cache, self.chooser, self.pad_token_id = model, cache, chooser, pad_token_id
        self.attention_mask = attention_mask
        self.next_position = None if position_ids is None else position_ids[:, -1:] + 1
        self.eos = mx.array(list(eos_token_ids), dtype=mx.int32) if eos_token_ids else None

    def choose(self, logits: mx.array, running: mx.array, seen: mx.array | None):
        """Sample the next token per row (pad for finished rows); update the seen mask and running rows."""
        token = self.chooser(logits, seen)
        token = mx.where(running, token, self.pad_token_id)
        if seen is not None:
            seen = mark_seen(seen, token)
        if self.eos is not None:
            running = mx.logical_and(running, mx.logical_not((token[:, None] == self.eos[None, :]).any(axis=-1)))
        return token, running, seen

    def forward(self, token: mx.array) -> mx.array:
        """Feed one token per row; return the lazy next-position logits [batch, V]."""
        step_mask = None
        if self.attention_mask is not None:
            ones = mx.ones((token.shape[0], 1), self.attention_mask.dtype)
            self.attention_mask = mx.concatenate([self.attention_mask, ones], axis=1)
            # A 4D boolean mask is used as given: no host round trip to inspect a 2D one every step.
            step_mask = self.attention_mask.astype(mx.bool_)[:, None, None, :]
        with trusted_ids():  # sampled from the model's own logits: in range, no host read-back needed
            out = self.model(
                token[:, None],
                attention_mask=step_mask,
                position_ids=self.next_position,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        if self.next_position is not None:
            self.next_position = self.next_position + 1
        return out.logits[:, -1, :]


def _decode(
    model,
    cache: Sequence,
    prompt: mx.array,
    chooser: TokenChooser,
    max_new_tokens: int,
    *,
    attention_mask: mx.array | None = None,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    penalty_history: mx.array | None = None,
    prefill_step_size: int = 512,
    progress: ProgressCallback | None = None,
    on_prefill_done: Callable[[], None] | None = None,
) -> Iterator[Step]:
    """Prefill `prompt` ([batch, T]) and yield up to `max_new_tokens` steps.

    A row that produced an eos id is finished: its later tokens are `pad_token_id`. The generator
    stops by itself only at `max_new_tokens`; the caller stops it at eos or stop strings. With a 2D
    `attention_mask` (left padding) each row gets its own positions, cumsum(mask) - 1.
    `penalty_history` ([batch, L] ids) is what the repetition penalty counts as seen; by default the prompt.
    """
    if max_new_tokens <= 0:
        return
    position_ids = None if attention_mask is None else padding_positions(attention_mask)
    logits = prefill(model, cache, prompt, attention_mask, position_ids, prefill_step_size, progress)
    use_penalty = chooser.params.repetition_penalty != 1.0
    history = prompt if penalty_history is None else penalty_history
    seen = seen_mask(history, logits.shape[-1]) if use_penalty else None
    step = _Stepper(model, cache, chooser, attention_mask, position_ids, eos_token_ids, pad_token_id)
    token, running, seen = step.choose(logits, mx.ones((prompt.shape[0],), dtype=mx.bool_), seen)
    mx.async_eval(token, running)
    if on_prefill_done is not None:
        mx.eval(token)
        on_prefill_done()
    for n in range(1, max_new_tokens + 1):
        if n < max_new_tokens:
            # Queue step n+1 before reading step n back, so the device never waits for Python.
            next_token, next_running, next_seen = step.choose(step.forward(token), running, seen)
            mx.async_eval(next_token, next_running)
        yield Step(token.tolist(), running.tolist())
        if n % CLEAR_CACHE_EVERY == 0:
            mx.clear_cache()
        if n < max_new_tokens:
            token, running, seen = next_token, next_running, next_seen
