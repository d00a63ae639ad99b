"""Public generation API: `generate`, `stream_generate` (text in, text out) and `model_generate`
(Transformers-style ids in, ids out, behind `LlamaForCausalLM.generate`).

Defaults differ on purpose: `model_generate` follows Transformers' GenerationConfig (greedy unless
`do_sample`, then top_k=50), so its output can be compared with Transformers token for token;
`stream_generate` and the CLI follow mlx-lm's CLI (temperature 0 = greedy, top_k/min_p off unless set).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..cache import check_cache_options, transformers_cache_options
from ..errors import ConfigError, InputError
from ..token_ids import check_ids
from .beam import BeamSettings, beam_search
from .config import stop_ids
from .loop import ProgressCallback, decode
from .options import GenerationOptions, resolve_options
from .outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from .processors import HistoryChooser, history_processors
from .sampling import SamplingParams, TokenChooser
from .speculative import SpeculativeStats, assisted_generate, speculative_steps
from .stopping import StopStrings

DEFAULT_MAX_LENGTH = 20  # Transformers' GenerationConfig.max_length


@dataclass
class GenerationResponse:
    """One streamed step: the new text segment, the token, and running statistics."""

    text: str
    token: int | None
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float  # GB, as reported by mx.get_peak_memory()
    finish_reason: str | None = None  # "stop" (eos or a stop string), "length" (max_tokens), or None
    from_draft: bool = False  # speculative / prompt-lookup decoding: an accepted draft token


class _TextStream:
    """Incremental text for a growing id list, for tokenizers without a streaming detokenizer."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = ""

    def add_token(self, token: int) -> str:
        self._ids.append(token)
        text = self._tokenizer.decode(self._ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte-token
            return ""
        return self._take(text)

    def finalize(self) -> str:
        return self._take(self._tokenizer.decode(self._ids))

    def _take(self, text: str) -> str:
        new = text[len(self._emitted) :] if text.startswith(self._emitted) else ""
        self._emitted = text
        return new


def _detokenizer(tokenizer):
    make = getattr(tokenizer, "streaming_detokenizer", None) or getattr(tokenizer, "detokenizer", None)
    if callable(make):
        return make()
    return _TextStream(tokenizer)


class _StopStrings:
    """Holds back text that may be the start of a stop string; reports where a stop string completes."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit now, whether a stop string was found)."""
        if not self.stops:
            return text, False
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self._pending = self._pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self._pending)), 0, -1):
                if self._pending.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out


def _eos_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    return [int(v) for v in value]


def _vocab_size(model) -> int:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    return vocab if isinstance(vocab, int) else 2**31 - 1  # another model checks its own ids


def check_prompt_length(model, n: int, cached: int = 0) -> str | None:
    """A warning text when `cached + n` positions exceed the model's max_position_embeddings, else None."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and cached + n > limit:
        return (
            f"the prompt needs {cached + n} positions but the model was trained on {limit} "
            "(max_position_embeddings); expect degraded output and quadratic time"
        )
    return None


def _encode_prompt(tokenizer, prompt: str | Sequence[int] | mx.array, vocab_size: int = 2**31 - 1) -> list[int]:
    if isinstance(prompt, str):
        # A prompt already rendered with its "<s>" (e.g. a chat template as text) must not get a second BOS.
        bos = getattr(tokenizer, "bos_token", None)
        has_bos = bool(bos) and prompt.startswith(bos)
        ids = list(tokenizer.encode(prompt, add_special_tokens=not has_bos))
        if not ids:
            return ids
        return check_ids([ids], vocab_size, "the encoded prompt").tolist()[0]
    if isinstance(prompt, (list, tuple)) and not prompt:
        return []
    return check_ids(prompt, vocab_size, "prompt", ndim=1).tolist()


def stream_generate(
    model,
    tokenizer,
    prompt: str | Sequence[int] | mx.array,
    max_tokens: int = 256,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    cache: list | None = None,
    prefill_step_size: int = 512,
    progress: ProgressCallback | None = None,
    draft_model=None,
    num_draft_tokens: int = 3,
    prompt_lookup: int | None = None,
    speculative_stats: SpeculativeStats | None = None,
    **cache_options,
) -> Iterator[GenerationResponse]:
    """Yield one GenerationResponse per generated token, text already detokenized.

    A string prompt is encoded with the tokenizer's special tokens (BOS); ids are used as given (e.g. a
    chat template's output). `temperature=0` is greedy. Generation ends at an eos id (the tokenizer's and
    every one in `model.generation_config`, unless `eos_token_id` is given: "stop", its text is
    not emitted), at a stop string ("stop", the text is cut before it) or after `max_tokens` ("length").
    Pass `cache` (from `model.make_cache()`) to continue a conversation without re-reading its history:
    the prompt is then only the new tokens.
    `draft_model` (same vocabulary; `num_draft_tokens` per round) or `prompt_lookup=k` turn on speculative
    decoding (batch 1; same greedy output, same sampling distribution). `cache_options` choose the KV cache:
    `max_kv_size` (rotating), `kv_bits`/`kv_group_size`/`quantized_kv_start` (quantized); see cache.make_cache.
    """
    cache_options = check_cache_options(cache_options, have_cache=cache is not None)
    params = SamplingParams.from_temperature(temperature, top_k, top_p, min_p, repetition_penalty)
    ids, eos = _prompt_ids(model, tokenizer, prompt, cache, eos_token_id)
    if cache is None:
        cache = model.make_cache(**cache_options)
    detok, stopper = _detokenizer(tokenizer), _StopStrings(stop or [])  # built before the clock starts
    mx.reset_peak_memory()
    clock = _Clock()
    common = dict(prefill_step_size=prefill_step_size, progress=progress, on_prefill_done=clock.prefill_done)
    chooser = TokenChooser(params, seed)
    if draft_model is not None or prompt_lookup:
        speculative = dict(draft_model=draft_model, num_draft_tokens=num_draft_tokens, prompt_lookup=prompt_lookup)
        steps = speculative_steps(
            model, cache, ids, chooser, max_tokens, seed=seed, stats=speculative_stats, **speculative, **common
        )
    else:
        steps = decode(model, cache, mx.array([ids], dtype=mx.int32), chooser, max_tokens, **common)
    yield from _responses(steps, len(ids), eos, detok, stopper, max_tokens, clock)


def _prompt_ids(model, tokenizer, prompt, cache, eos_token_id) -> tuple[list[int], set[int]]:
    """The prompt's ids (checked against the vocabulary, a warning past the context) and the stop ids."""
    ids = _encode_prompt(tokenizer, prompt, _vocab_size(model))
    if not ids:
        raise ConfigError("the prompt is empty: give at least one token (a string prompt gets a BOS token)")
    too_long = check_prompt_length(model, len(ids), cache[0].offset if cache else 0)
    if too_long:
        warnings.warn(too_long, stacklevel=3)
    eos = set(_eos_list(eos_token_id)) if eos_token_id is not None else stop_ids(model, tokenizer)
    return ids, eos


class _Clock:
    """Prompt and generation timing for the statistics of each response."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.prompt = 0.0
        self.first = 0.0

    def prefill_done(self) -> None:
        self.prompt = time.perf_counter() - self.start

    def stats(self, n: int, prompt_tokens: int, step) -> dict:
        if n == 1:
            self.first = time.perf_counter()
        elapsed = max(time.perf_counter() - self.first, 1e-9)
        return {
            "prompt_tokens": prompt_tokens,
            "prompt_tps": prompt_tokens / max(self.prompt, 1e-9),
            "generation_tokens": n,
            "generation_tps": (n - 1) / elapsed if n > 1 else 0.0,
            "peak_memory": mx.get_peak_memory() / 1e9,
            "from_draft": bool(step.from_draft and step.from_draft[0]),
        }


def _responses(steps, prompt_tokens: int, eos: set[int], detok, stopper, max_tokens: int, clock: _Clock):
    """Decode steps -> GenerationResponses, ending at an eos id, a stop string or max_tokens."""
    for n, step in enumerate(steps, start=1):
        token = step.tokens[0]
        stats = clock.stats(n, prompt_tokens, step)
        if token in eos:
            text, _ = stopper.feed(detok.finalize())
            yield GenerationResponse(text + stopper.flush(), token, finish_reason="stop", **stats)
            return
        text, stopped = stopper.feed(detok.add_token(token))
        if stopped:
            yield GenerationResponse(text, token, finish_reason="stop", **stats)
            return
        if n == max_tokens:
            tail, stopped = stopper.feed(detok.finalize())
            text += tail if stopped else tail + stopper.flush()
            yield GenerationResponse(text, token, finish_reason="stop" if stopped else "length", **stats)
            return
        yield GenerationResponse(text, token, **stats)


def generate(
    model,
    tokenizer,
    prompt: str | Sequence[int] | mx.array,
    max_tokens: int = 256,
    *,
    verbose: bool = False,
    **kwargs,
) -> str:
    """The generated text (without the prompt); `verbose` prints tokens/s and peak memory to stderr."""
    parts = []
    last = None
    for last in stream_generate(model, tokenizer, prompt, max_tokens, **kwargs):
        parts.append(last.text)
    if verbose and last is not None:
        print(format_stats(last), file=sys.stderr)
    return "".join(parts)


def format_stats(response: GenerationResponse) -> str:
    """The statistics line the CLI prints after a generation."""
    return (
        f"Prompt: {response.prompt_tokens} tokens, {response.prompt_tps:.1f} tokens/s\n"
        f"Generation: {response.generation_tokens} tokens, {response.generation_tps:.1f} tokens/s\n"
        f"Peak memory: {_memory(response.peak_memory)}"
    )


def _memory(gigabytes: float) -> str:
    return f"{gigabytes:.3f} GB" if gigabytes >= 1 else f"{gigabytes * 1000:.1f} MB"


def _as_ids(input_ids, vocab_size: int = 2**31 - 1, what: str = "input_ids") -> np.ndarray:
    """A [batch, length] int64 array (1-D ids are one row); InputError for anything else or ids out of range."""
    try:
        ndim = input_ids.ndim if isinstance(input_ids, mx.array) else np.ndim(input_ids)
    except (ValueError, TypeError):
        ndim = 2  # ragged or odd: check_ids says what is wrong
    ids = check_ids(input_ids, vocab_size, what, ndim=1 if ndim == 1 else 2)
    arr = np.array(ids, dtype=np.int64)
    return arr[None, :] if arr.ndim == 1 else arr


def special_ids(config, eos_token_id, pad_token_id) -> tuple[list[int], int]:
    """The eos ids (argument, else the config's) and the pad id (argument, config, first eos, else 0)."""
    eos = _eos_list(eos_token_id if eos_token_id is not None else getattr(config, "eos_token_id", None))
    if pad_token_id is None:
        pad_token_id = getattr(config, "pad_token_id", None)
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0
    return eos, int(pad_token_id)


def new_token_count(config, prompt_len: int, max_length: int | None, max_new_tokens: int | None) -> int:
    """Transformers' length rules: max_new_tokens wins; max_length counts the prompt; default 20 new tokens."""
    if max_new_tokens is not None:
        if max_length is not None:
            warnings.warn("both max_new_tokens and max_length were given: max_new_tokens wins", stacklevel=3)
        max_length = prompt_len + max_new_tokens
    elif max_length is None:
        max_length = DEFAULT_MAX_LENGTH + prompt_len
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None:
            max_length = min(max_length, limit)
    if max_length <= prompt_len:
        warnings.warn(
            f"max_length={max_length} does not exceed the input length {prompt_len}: generating one token; "
            "use max_new_tokens to set the number of new tokens",
            stacklevel=3,
        )
    return max(max_length - prompt_len, 1)


def infer_attention_mask(ids: np.ndarray, attention_mask, pad_token_id: int, eos: Sequence[int]) -> np.ndarray:
    """The given mask (checked), else Transformers' inference: pads are masked if the pad id is not an eos."""
    if attention_mask is None:
        infer = pad_token_id not in eos and bool((ids == pad_token_id).any())
        return (ids != pad_token_id).astype(np.int64) if infer else np.ones_like(ids)
    try:
        mask = _as_ids(attention_mask, 2, "attention_mask")
    except InputError as exc:
        raise InputError(f"{exc} (attention_mask holds only 0 and 1)") from None
    if mask.shape != ids.shape:
        raise ConfigError(f"attention_mask has shape {mask.shape} but input_ids has shape {ids.shape}")
    return mask


def warn_right_padding(mask: np.ndarray) -> None:
    """Decoder-only generation continues each row's last slot: a padded last slot is a user mistake."""
    if mask.shape[0] > 1 and (mask[:, -1] == 0).any():
        warnings.warn(
            "a row ends with padding: decoder-only generation needs left padding (padding_side='left')",
            stacklevel=3,
        )


def decode_ids(
    model,
    ids: np.ndarray,
    mask: np.ndarray,
    chooser: TokenChooser,
    new_tokens: int,
    eos: Sequence[int],
    pad_token_id: int,
    prefill_step_size: int = 512,
    stop: StopStrings | None = None,
    streamer=None,
    cache: list | None = None,
) -> np.ndarray:
    """Run the decode loop over a (left-padded) batch; return prompt + new ids, finished rows padded.

    A row also finishes when a stop string ends in its newest token; `streamer` gets the prompt, then
    each step's tokens (Transformers' `put` / `end` protocol).
    """
    batch = ids.shape[0]
    # An all-ones mask is the plain causal case: the model's default positions are the same.
    model_mask = None if mask.all() else mx.array(mask.astype(np.int32))
    rows, done, generated = ids.tolist(), np.zeros(batch, dtype=bool), []
    if streamer is not None:
        streamer.put(ids)
    cache = model.make_cache() if cache is None else cache
    for step in decode(
        model,
        cache,
        mx.array(ids.astype(np.int32)),
        chooser,
        new_tokens,
        attention_mask=model_mask,
        eos_token_ids=eos,
        pad_token_id=pad_token_id,
        prefill_step_size=prefill_step_size,
    ):
        tokens = np.where(done, pad_token_id, np.array(step.tokens, dtype=np.int64))
        running = np.array(step.running, dtype=bool) & ~done
        if stop is not None:
            for r in np.flatnonzero(running):
                rows[r].append(int(tokens[r]))
                done[r] = stop.hit(rows[r])
            running &= ~done
        generated.append(tokens)
        if streamer is not None:
            streamer.put(tokens)
        if not running.any():
            break
    if streamer is not None:
        streamer.end()
    return np.concatenate([ids, np.array(generated, dtype=np.int64).T.reshape(batch, -1)], axis=1)


def _sample(
    model,
    ids: np.ndarray,
    mask: np.ndarray,
    options: GenerationOptions,
    eos: list[int],
    pad: int,
    new_tokens: int,
    extras: dict,
):
    """Greedy or sampling; `extras` holds streamer, tokenizer, seed, prefill_step_size."""
    if options.num_return_sequences > 1:  # sampling several continuations per prompt: repeat the rows
        ids, mask = (np.repeat(a, options.num_return_sequences, axis=0) for a in (ids, mask))
    params = SamplingParams(
        do_sample=options.do_sample,
        temperature=options.temperature,
        top_k=options.top_k,
        top_p=options.top_p,
        min_p=options.min_p,
        repetition_penalty=float(options.repetition_penalty),
    )
    processors = history_processors(options, eos, ids.shape[1])
    record = (
        options.return_dict_in_generate and options.output_scores,
        options.return_dict_in_generate and options.output_logits,
    )
    chooser = HistoryChooser(params, extras["seed"], ids, processors, *record)
    cache = model.make_cache(
        **transformers_cache_options(options.cache_implementation, options.cache_config, not mask.all())
    )
    if extras["assistant_model"] is not None or options.prompt_lookup_num_tokens:
        return _assisted(model, ids, mask, chooser, new_tokens, eos, cache, options, extras)
    stop = StopStrings(options.stop_strings, extras["tokenizer"]) if options.stop_strings else None
    out = decode_ids(
        model, ids, mask, chooser, new_tokens, eos, pad, extras["prefill_step_size"], stop, extras["streamer"], cache
    )
    sequences = mx.array(out.astype(np.int32))
    if not options.return_dict_in_generate:
        return sequences
    steps = out.shape[1] - ids.shape[1]
    return GenerateDecoderOnlyOutput(
        sequences,
        tuple(chooser.scores[:steps]) if record[0] else None,
        tuple(chooser.logits[:steps]) if record[1] else None,
    )


def _assisted(
    model,
    ids: np.ndarray,
    mask: np.ndarray,
    chooser: TokenChooser,
    new_tokens: int,
    eos: list[int],
    cache: list,
    options: GenerationOptions,
    extras: dict,
) -> mx.array:
    """Speculative decoding with `assistant_model` or prompt lookup (Transformers' assisted generation)."""
    if options.return_dict_in_generate or extras["streamer"] is not None or options.stop_strings:
        raise ConfigError("assisted generation returns plain ids: no streamer, stop_strings or return_dict_in_generate")
    return assisted_generate(
        model,
        ids,
        None if mask.all() else mask,
        cache,
        chooser,
        new_tokens,
        extras["assistant_model"],
        options.num_assistant_tokens,
        options.prompt_lookup_num_tokens,
        seed=extras["seed"],
        eos_token_ids=eos,
        prefill_step_size=extras["prefill_step_size"],
    )


def _beam(
    model,
    ids: np.ndarray,
    mask: np.ndarray,
    options: GenerationOptions,
    eos: list[int],
    pad: int,
    new_tokens: int,
    extras: dict,
):
    """Beam search (Transformers' fill value for finished beams: the pad id unless it is 0, then eos)."""
    if extras["streamer"] is not None:
        raise ConfigError("streamer is not supported with beam search (num_beams > 1), as in Transformers")
    fill = (pad or eos[0]) if eos else -1
    settings = BeamSettings(
        options.num_beams,
        new_tokens,
        eos,
        fill,
        options.length_penalty,
        options.early_stopping,
        options.num_return_sequences,
        options.repetition_penalty,
    )
    stop = StopStrings(options.stop_strings, extras["tokenizer"]) if options.stop_strings else None
    record = (
        options.return_dict_in_generate and options.output_scores,
        options.return_dict_in_generate and options.output_logits,
    )
    result = beam_search(
        model,
        ids,
        mask,
        settings,
        history_processors(options, eos, ids.shape[1]),
        stop.hit if stop else None,
        extras["prefill_step_size"],
        record,
    )
    sequences = mx.array(result.sequences.astype(np.int32))
    if not options.return_dict_in_generate:
        return sequences
    as_mx = lambda arrays: tuple(mx.array(a) for a in arrays)  # noqa: E731
    return GenerateBeamDecoderOnlyOutput(
        sequences,
        mx.array(result.sequences_scores) if record[0] else None,
        as_mx(result.scores) if record[0] else None,
        as_mx(result.logits) if record[1] else None,
        mx.array(result.beam_indices.astype(np.int32)),
    )


def model_generate(
    model,
    input_ids=None,
    generation_config=None,
    *,
    attention_mask=None,
    inputs=None,
    streamer=None,
    tokenizer=None,
    seed: int | None = None,
    prefill_step_size: int = 512,
    assistant_model=None,
    **kwargs,
):
    """Transformers' `generate` for a causal LM: [batch, prompt + new] ids, prompt included.

    Keyword arguments are GenerationConfig fields (see `GenerationOptions`; an unknown one is an error),
    taken over `generation_config` and the model's own. Batches must be left padded; positions come from
    the attention mask (cumsum - 1). Rows that emitted an eos id are padded with `pad_token_id` (default:
    the config's, else the first eos id) until every row is done or `max_length` is reached. Without
    `max_length`/`max_new_tokens`, 20 new tokens. The repetition penalty counts every id in `input_ids`
    (pads too, as Transformers does) and every generated id. `num_beams > 1` runs beam search;
    `return_dict_in_generate=True` returns Transformers' output dataclasses. `assistant_model` /
    `prompt_lookup_num_tokens` run speculative decoding (batch 1); `cache_implementation` "quantized" /
    "sliding_window" (with `cache_config`) pick the KV cache.
    """
    options = resolve_options(model, generation_config, kwargs)
    ids = _as_ids(input_ids if input_ids is not None else inputs, _vocab_size(model))
    eos, pad_token_id = special_ids(model.config, options.eos_token_id, options.pad_token_id)
    new_tokens = new_token_count(model.config, ids.shape[1], options.max_length, options.max_new_tokens)
    mask = infer_attention_mask(ids, attention_mask, pad_token_id, eos)
    warn_right_padding(mask)
    extras = {
        "streamer": streamer,
        "tokenizer": tokenizer,
        "seed": seed,
        "prefill_step_size": prefill_step_size,
        "assistant_model": assistant_model,
    }
    run = _beam if options.num_beams > 1 else _sample
    return run(model, ids, mask, options, eos, pad_token_id, new_tokens, extras)
