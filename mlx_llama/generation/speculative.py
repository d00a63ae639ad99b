"""Speculative decoding: a cheap proposer drafts k tokens, the target scores them all in one forward.

Two proposers share one verifier: a draft model of the same vocabulary (`DraftModelProposer`) and prompt
lookup (`PromptLookupProposer`: copy what followed the last earlier occurrence of the sequence's trailing
n-gram, no second model). Greedy: a draft is kept while it equals the target's argmax, so the output is the
target's own greedy output. Sampling uses the standard accept/reject rule (Leviathan et al. 2023, Chen et
al. 2023): keep draft d with probability min(1, p(d) / q(d)), else draw from max(p - q, 0) renormalised;
when every draft is kept, one more token is drawn from the target. The tokens then follow the target's
distribution p exactly, whatever q is (a lookup draft has q = one-hot). Batch size 1 only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..errors import ConfigError
from .loop import ProgressCallback, Step, cache_arrays, prefill
from .sampling import TokenChooser, mark_seen, seen_mask
from .wired import wired_limit


@dataclass
class SpeculativeStats:
    """Running counts: drafted tokens, accepted ones, verification rounds."""

    drafted: int = 0
    accepted: int = 0
    rounds: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def _trim(cache: Sequence, n: int) -> None:
    if n > 0:
        for layer in cache:
            layer.trim(n)


class DraftModelProposer:
    """Drafts with a small model (same vocabulary) whose KV cache follows the accepted sequence."""

    def __init__(self, draft_model, chooser: TokenChooser) -> None:
        self.model, self.chooser = draft_model, chooser
        self.cache = draft_model.make_cache()
        self.cached = 0  # tokens of the sequence in the draft's cache

    def prefill(self, tokens: list[int], step_size: int) -> None:
        prefill(self.model, self.cache, mx.array([tokens], dtype=mx.int32), step_size=step_size)
        mx.eval(cache_arrays(self.cache))
        self.cached = len(tokens)

    def _logits(self, tokens: mx.array) -> mx.array:
        out = self.model(tokens[None], past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def propose(self, seq: list[int], k: int, seen: mx.array | None) -> tuple[mx.array, mx.array | None]:
        """k drafted ids [k] and the distributions they were drawn from [k, V] (lazy arrays)."""
        logits = self._logits(mx.array(seq[self.cached :], dtype=mx.int32))
        tokens, probs = [], []
        for i in range(k):
            processed = self.chooser.process(logits, seen)
            token = self.chooser.choose(processed)
            tokens.append(token)
            probs.append(mx.softmax(processed, axis=-1))
            if seen is not None:
                seen = mark_seen(seen, token)
            if i < k - 1:
                logits = self._logits(token)
        self.cached = len(seq) + k - 1
        return mx.concatenate(tokens), mx.concatenate(probs)

    def accepted(self, seq_len: int, n_accepted: int) -> None:
        """The sequence had `seq_len` tokens before the round and kept `n_accepted` drafts."""
        keep = seq_len + n_accepted
        _trim(self.cache, self.cached - keep)
        self.cached = min(self.cached, keep)


class PromptLookupProposer:
    """Drafts by copying: the tokens after the latest earlier match of the last n-gram (n = max_ngram..1)."""

    def __init__(self, max_ngram: int = 3) -> None:
        self.max_ngram = max_ngram

    def prefill(self, tokens: list[int], step_size: int) -> None:
        pass

    def propose(self, seq: list[int], k: int, seen: mx.array | None) -> tuple[mx.array, None]:
        arr = np.asarray(seq)
        for n in range(min(self.max_ngram, len(arr) - 1), 0, -1):
            windows = np.lib.stride_tricks.sliding_window_view(arr[:-1], n)
            hits = np.flatnonzero((windows == arr[-n:]).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return mx.array(arr[start : start + k].astype(np.int32)), None
        return mx.array([], dtype=mx.int32), None

    def accepted(self, seq_len: int, n_accepted: int) -> None:
        pass


def _row_seen(seq: list[int], drafts: mx.array, vocab: int) -> mx.array:
    """Seen masks for the verify rows: row i has seen the sequence and the first i drafts."""
    base = seen_mask(mx.array([seq], dtype=mx.int32), vocab)
    n = drafts.shape[0]
    if n == 0:
        return base
    onehot = mx.put_along_axis(mx.zeros((n, vocab), mx.int32), drafts[:, None], mx.ones((n, 1), mx.int32), axis=-1)
    grown = mx.cumsum(onehot, axis=0) > 0
    return mx.logical_or(base, mx.concatenate([mx.zeros((1, vocab), mx.bool_), grown]))


def _draw(rng: np.random.Generator, dist: np.ndarray) -> int:
    return int(rng.choice(dist.shape[0], p=dist / dist.sum()))


def _accept_sampled(p: np.ndarray, drafts: np.ndarray, q: np.ndarray | None, rng: np.random.Generator) -> list[int]:
    """The accept/reject rule: returns the kept drafts plus one token drawn from the target side."""
    out = []
    for i, d in enumerate(drafts):
        qd = 1.0 if q is None else float(q[i, d])
        if rng.random() * qd < p[i, d]:  # u < p/q, written without dividing
            out.append(int(d))
            continue
        residual = np.maximum(p[i] - (np.eye(1, p.shape[1], d)[0] if q is None else q[i]), 0.0)
        out.append(_draw(rng, residual if residual.sum() > 0 else p[i]))
        return out
    out.append(_draw(rng, p[len(drafts)]))
    return out


def _accept_greedy(choice: np.ndarray, drafts: np.ndarray) -> list[int]:
    out = []
    for i, d in enumerate(drafts):
        if choice[i] != d:
            break
        out.append(int(d))
    out.append(int(choice[len(out)]))
    return out


def speculative_decode(model, *args, **kwargs) -> Iterator[Step]:
    """`_speculative_decode` with the model's memory wired on a Mac while it runs."""
    with wired_limit(model):
        yield from _speculative_decode(model, *args, **kwargs)


def _verify(processed: mx.array, drafts: mx.array, q: mx.array | None, do_sample: bool, rng) -> list[int]:
    """The accepted drafts plus one token of the target's (one host sync): greedy agreement, or accept/reject."""
    if do_sample:
        p = mx.softmax(processed, axis=-1)
        mx.eval(p, drafts, *([] if q is None else [q]))
        return _accept_sampled(
            np.array(p, np.float64), np.array(drafts), None if q is None else np.array(q, np.float64), rng
        )
    choice = mx.argmax(processed, axis=-1)
    mx.eval(choice, drafts)
    return _accept_greedy(np.array(choice), np.array(drafts))


def _speculative_decode(
    model,
    cache: Sequence,
    prompt: Sequence[int],
    chooser: TokenChooser,
    max_new_tokens: int,
    proposer,
    num_draft_tokens: int,
    *,
    eos_token_ids: Sequence[int] = (),
    seed: int | None = None,
    prefill_step_size: int = 512,
    progress: ProgressCallback | None = None,
    on_prefill_done: Callable[[], None] | None = None,
    stats: SpeculativeStats | None = None,
) -> Iterator[Step]:
    """Yield one Step per new token (batch 1), at most `max_new_tokens`; ends after an eos id."""
    if num_draft_tokens < 1:
        raise ConfigError(f"num_draft_tokens must be at least 1, got {num_draft_tokens}")
    seq = [int(t) for t in prompt]
    stats = stats if stats is not None else SpeculativeStats()
    rng = np.random.default_rng(seed)
    use_penalty = chooser.params.repetition_penalty != 1.0
    vocab = model.config.vocab_size
    eos = set(eos_token_ids)
    if len(seq) > 1:
        prefill(model, cache, mx.array([seq[:-1]], dtype=mx.int32), step_size=prefill_step_size, progress=progress)
        mx.eval(cache_arrays(cache))
        proposer.prefill(seq[:-1], prefill_step_size)
    target_cached = len(seq) - 1
    if on_prefill_done is not None:
        on_prefill_done()
    produced = 0
    while produced < max_new_tokens:
        k = min(num_draft_tokens, max_new_tokens - produced - 1)
        seen = seen_mask(mx.array([seq], dtype=mx.int32), vocab) if use_penalty else None
        drafts, q = proposer.propose(seq, k, seen) if k > 0 else (mx.array([], dtype=mx.int32), None)
        n = drafts.shape[0]
        feed = mx.concatenate([mx.array(seq[target_cached:], dtype=mx.int32), drafts])
        logits = model(feed[None], past_key_values=cache, use_cache=True, logits_to_keep=n + 1).logits[0]
        processed = chooser.process(logits, _row_seen(seq, drafts, vocab) if use_penalty else None)
        new = _verify(processed, drafts, q, chooser.params.do_sample, rng)
        n_acc = len(new) - 1
        _trim(cache, n - n_acc)
        proposer.accepted(len(seq), n_acc)
        stats.drafted, stats.accepted, stats.rounds = stats.drafted + n, stats.accepted + n_acc, stats.rounds + 1
        seq.extend(new)
        target_cached = len(seq) - 1
        for j, token in enumerate(new):
            produced += 1
            yield Step([token], [token not in eos], from_draft=[j < n_acc])
            if token in eos or produced == max_new_tokens:
                return


def speculative_steps(
    model,
    cache: Sequence,
    prompt: Sequence[int],
    chooser: TokenChooser,
    max_new_tokens: int,
    *,
    draft_model=None,
    num_draft_tokens: int = 3,
    prompt_lookup: int | None = None,
    seed: int | None = None,
    **kwargs,
) -> Iterator[Step]:
    """`speculative_decode` with the proposer the options ask for: a draft model or prompt lookup (k tokens)."""
    if draft_model is not None and prompt_lookup:
        raise ConfigError("give either a draft model or prompt lookup, not both")
    if draft_model is not None:
        ours, theirs = model.config.vocab_size, draft_model.config.vocab_size
        if ours != theirs:
            raise ConfigError(
                f"the draft model's vocab_size is {theirs} but the model's is {ours}: "
                "speculative decoding needs the same vocabulary"
            )
        draft_seed = None if seed is None else seed + 1
        proposer, k = DraftModelProposer(draft_model, TokenChooser(chooser.params, draft_seed)), num_draft_tokens
    else:
        proposer, k = PromptLookupProposer(), int(prompt_lookup)
    return speculative_decode(model, cache, prompt, chooser, max_new_tokens, proposer, k, seed=seed, **kwargs)


def assisted_generate(
    model,
    ids: np.ndarray,
    mask,
    cache: Sequence,
    chooser: TokenChooser,
    max_new_tokens: int,
    assistant_model,
    num_assistant_tokens: int,
    prompt_lookup_num_tokens: int | None,
    **kwargs,
) -> mx.array:
    """`model.generate(assistant_model=... | prompt_lookup_num_tokens=...)`: prompt + new ids, batch 1."""
    if ids.shape[0] != 1 or mask is not None:
        raise ConfigError("assisted (speculative) generation takes one unpadded prompt (batch size 1)")
    steps = speculative_steps(
        model,
        cache,
        ids[0].tolist(),
        chooser,
        max_new_tokens,
        draft_model=assistant_model,
        num_draft_tokens=num_assistant_tokens,
        prompt_lookup=prompt_lookup_num_tokens,
        **kwargs,
    )
    new = [step.tokens[0] for step in steps]
    return mx.array(np.concatenate([ids, np.array([new], dtype=np.int64)], axis=1).astype(np.int32))
