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

from ..cache import transformers_cache_options
from ..errors import ConfigError
from .loop import ProgressCallback, decode
from .sampling import SamplingParams, TokenChooser
from .speculative import SpeculativeStats, assisted_generate, speculative_steps

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


def _encode_prompt(tokenizer, prompt: str | Sequence[int] | mx.array) -> list[int]:
    if isinstance(prompt, str):
        # A prompt already rendered with its "<s>" (e.g. a chat template as text) must not get a second BOS.
        bos = getattr(tokenizer, "bos_token", None)
        has_bos = bool(bos) and prompt.startswith(bos)
        return list(tokenizer.encode(prompt, add_special_tokens=not has_bos))
    return [int(t) for t in (prompt.tolist() if isinstance(prompt, mx.array) else prompt)]


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
    chat template's output). `temperature=0` is greedy. Generation ends at an eos id ("stop", its text is
    not emitted), at a stop string ("stop", the text is cut before it) or after `max_tokens` ("length").
    Pass `cache` (from `model.make_cache()`) to continue a conversation without re-reading its history:
    the prompt is then only the new tokens.
    `draft_model` (same vocabulary; `num_draft_tokens` per round) or `prompt_lookup=k` turn on speculative
    decoding (batch 1; same greedy output, same sampling distribution). `cache_options` choose the KV cache:
    `max_kv_size` (rotating), `kv_bits`/`kv_group_size`/`quantized_kv_start` (quantized); see cache.make_cache.
    """
    params = SamplingParams.from_temperature(temperature, top_k, top_p, min_p, repetition_penalty)
    ids = _encode_prompt(tokenizer, prompt)
    if not ids:
        raise ConfigError("the prompt is empty: give at least one token (a string prompt gets a BOS token)")
    eos = set(_eos_list(eos_token_id if eos_token_id is not None else tokenizer.eos_token_id))
    if cache is None:
        cache = model.make_cache(**{k: v for k, v in cache_options.items() if v is not None})
    detok = _detokenizer(tokenizer)
    stopper = _StopStrings(stop or [])

    mx.reset_peak_memory()
    start = time.perf_counter()
    timing = {}

    def prefill_done() -> None:
        timing["prompt"] = time.perf_counter() - start

    if draft_model is not None or prompt_lookup:
        steps = speculative_steps(model, cache, ids, TokenChooser(params, seed), max_tokens, draft_model=draft_model,
                                  num_draft_tokens=num_draft_tokens, prompt_lookup=prompt_lookup, seed=seed,
                                  prefill_step_size=prefill_step_size, progress=progress,
                                  on_prefill_done=prefill_done, stats=speculative_stats)
    else:
        steps = decode(
            model,
            cache,
            mx.array([ids], dtype=mx.int32),
            TokenChooser(params, seed),
            max_tokens,
            prefill_step_size=prefill_step_size,
            progress=progress,
            on_prefill_done=prefill_done,
        )
    n = 0
    for n, step in enumerate(steps, start=1):
        token = step.tokens[0]
        if n == 1:
            first = time.perf_counter()
        elapsed = max(time.perf_counter() - first, 1e-9)
        stats = {
            "prompt_tokens": len(ids),
            "prompt_tps": len(ids) / max(timing["prompt"], 1e-9),
            "generation_tokens": n,
            "generation_tps": (n - 1) / elapsed if n > 1 else 0.0,
            "peak_memory": mx.get_peak_memory() / 1e9,
            "from_draft": bool(step.from_draft and step.from_draft[0]),
        }
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


def _as_ids(input_ids) -> np.ndarray:
    if isinstance(input_ids, mx.array):
        arr = np.array(input_ids)
    elif hasattr(input_ids, "detach"):  # a torch tensor, as Transformers users pass
        arr = input_ids.detach().cpu().numpy()
    else:
        arr = np.asarray(input_ids)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"input_ids must be a non-empty [batch, length] id array, got shape {arr.shape}")
    return arr.astype(np.int64)


def model_generate(
    model,
    input_ids,
    attention_mask=None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float = 1.0,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    prefill_step_size: int = 512,
    assistant_model=None,
    num_assistant_tokens: int = 5,
    prompt_lookup_num_tokens: int | None = None,
    cache_implementation: str | None = None,
    cache_config: dict | None = None,
) -> mx.array:
    """Transformers' `generate` for a causal LM: returns [batch, prompt + new] ids, prompt included.

    Batches must be left padded; positions come from the attention mask (cumsum - 1). Rows that emitted
    an eos id are padded with `pad_token_id` (default: the config's, else the first eos id) until every
    row is done or `max_length` is reached. Without `max_length`/`max_new_tokens`, 20 new tokens, as the
    default GenerationConfig gives. The repetition penalty counts every id in `input_ids` (pads too, as
    Transformers does) and every generated id. `assistant_model` / `prompt_lookup_num_tokens` run
    speculative decoding (batch 1); `cache_implementation` "quantized" / "sliding_window" pick the KV cache.
    """
    ids = _as_ids(input_ids)
    batch, prompt_len = ids.shape
    config = model.config
    eos = _eos_list(eos_token_id if eos_token_id is not None else getattr(config, "eos_token_id", None))
    if pad_token_id is None:
        pad_token_id = getattr(config, "pad_token_id", None)
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0

    if max_new_tokens is not None:
        if max_length is not None:
            warnings.warn("both max_new_tokens and max_length were given: max_new_tokens wins", stacklevel=2)
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
            stacklevel=2,
        )
    new_tokens = max(max_length - prompt_len, 1)

    if attention_mask is None:
        # As Transformers: infer padding only when the pad id occurs and is not an eos id.
        infer = pad_token_id not in eos and bool((ids == pad_token_id).any())
        mask = (ids != pad_token_id).astype(np.int64) if infer else np.ones_like(ids)
    else:
        mask = _as_ids(attention_mask)
        if mask.shape != ids.shape:
            raise ConfigError(f"attention_mask has shape {mask.shape} but input_ids has shape {ids.shape}")
    if batch > 1 and (mask[:, -1] == 0).any():
        warnings.warn(
            "a row ends with padding: decoder-only generation needs left padding (padding_side='left')",
            stacklevel=2,
        )

    params = SamplingParams(
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=float(repetition_penalty),
    )
    prompt = mx.array(ids.astype(np.int32))
    # An all-ones mask is the plain causal case: the model's default positions are the same.
    model_mask = None if mask.all() else mx.array(mask.astype(np.int32))
    cache = model.make_cache(**transformers_cache_options(cache_implementation, cache_config, model_mask is not None))
    if assistant_model is not None or prompt_lookup_num_tokens:
        return assisted_generate(model, ids, model_mask, cache, TokenChooser(params, seed), new_tokens,
                                 assistant_model, num_assistant_tokens, prompt_lookup_num_tokens, seed=seed,
                                 eos_token_ids=eos, prefill_step_size=prefill_step_size)
    generated = []
    for step in decode(
        model,
        cache,
        prompt,
        TokenChooser(params, seed),
        new_tokens,
        attention_mask=model_mask,
        eos_token_ids=eos,
        pad_token_id=pad_token_id,
        prefill_step_size=prefill_step_size,
    ):
        generated.append(step.tokens)
        if not any(step.running):
            break
    out = np.concatenate([ids, np.array(generated, dtype=np.int64).T.reshape(batch, -1)], axis=1)
    return mx.array(out.astype(np.int32))
