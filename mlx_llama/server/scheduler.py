"""The scheduler: one thread owns MLX and runs continuous batching over a queue of jobs.

Each iteration: drop cancelled work, admit queued jobs up to `max_concurrency`, prefill one chunk of the
oldest admitted job (a prompt-cache hit prefills only the part it lacks), then one decode step for every
running row. A job's prompt is prefilled alone, exactly as `generate` does it, and its rows then join the
running batch, left-padded (see batch_cache); finished rows leave and their keys/values go to the prompt
cache. Results go back to the HTTP side through each job's `emit` callback (thread-safe).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import mlx.core as mx

from .batch_cache import BatchCache, BatchLayerCache, row_kv
from .prompt_cache import PromptCache
from .sampler import Pick, RowSampler, SamplingOptions, pick_greedy_rows
from .stop_text import StopText
from .token_text import token_texts

log = logging.getLogger("mlx_llama.server")


@dataclass
class Event:
    """What the scheduler tells a job's HTTP handler: "token", "done" (with usage) or "error"."""

    kind: str
    index: int = 0
    text: str = ""
    token: int | None = None
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    message: str = ""


@dataclass
class Job:
    """One validated request: prompt ids, limits and sampling; `n` rows share the prompt."""

    prompt: list[int]
    max_tokens: int
    options: SamplingOptions
    emit: Callable[[Event], None]
    n: int = 1
    stop: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    cached_tokens: int = 0
    completion_tokens: int = 0
    open_rows: int = 0


@dataclass
class _Pending:
    job: Job
    cache: list[BatchLayerCache]
    remaining: list[int]


class _Row:
    def __init__(self, job: Job, index: int, sampler: RowSampler, detok) -> None:
        self.job, self.index, self.sampler, self.detok = job, index, sampler, detok
        self.stop = StopText(job.stop)
        self.fed = list(job.prompt)  # the ids whose keys/values are in the batch cache
        self.generated = 0
        self.next_token: int | None = None
        self.finish_reason: str | None = None


def _detokenizer(tokenizer):
    make = getattr(tokenizer, "detokenizer", None) or getattr(tokenizer, "streaming_detokenizer", None)
    return make()


class Scheduler:
    """Owns the model; `submit(job)` from any thread, decoding in `run_until` on the thread that owns MLX.

    (Run it on the main thread: an MLX thread still tearing down while the process exits can abort it.)
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_concurrency: int = 8,
        prompt_cache_bytes: int = 1 << 30,
        prefill_step_size: int = 512,
        context_length: int | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_concurrency = max_concurrency
        self.prefill_step_size = prefill_step_size
        self.context_length = context_length or model.config.max_position_embeddings
        self.vocab = model.config.vocab_size
        eos = getattr(model.config, "eos_token_id", None)
        eos = tokenizer.eos_token_id if eos is None else eos
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.prompt_cache = PromptCache(prompt_cache_bytes)
        self.batch = BatchCache()
        self.rows: list[_Row] = []
        self.pending: deque[_Pending] = deque()
        self.waiting: deque[Job] = deque()
        self.active: set[int] = set()  # ids of admitted jobs
        self.cancelled = 0
        self._queue: queue.Queue[Job] = queue.Queue()
        self._stopping = threading.Event()

    # ---- outside the thread --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run_until` to return after its current iteration."""
        self._stopping.set()

    def submit(self, job: Job) -> None:
        if self._stopping.is_set():
            job.emit(Event("error", message="the server is shutting down"))
            return
        self._queue.put(job)

    def snapshot(self) -> dict:
        return {
            "active": len(self.active),
            "queued": len(self.waiting) + self._queue.qsize(),
            "rows": len(self.rows),
            "cancelled": self.cancelled,
            "prompt_cache": {"entries": len(self.prompt_cache), "bytes": self.prompt_cache.nbytes},
        }

    # ---- the thread ----------------------------------------------------------------------------------------

    def run_until(self, done: Callable[[], bool]) -> None:
        """Serve jobs on the calling thread (which then owns MLX) until `done()` or `stop()`."""
        while not (self._stopping.is_set() or done()):
            try:
                self._iteration()
            except Exception as e:  # a failure must reach the clients, and the server keeps serving
                log.exception("scheduler step failed")
                self._fail_all(f"internal error: {e}")
        self._stopping.set()
        self._fail_all("the server is shutting down")

    def _iteration(self) -> None:
        self._drop_cancelled()
        self._admit()
        if self.pending:
            self._prefill_chunk()
        if self.rows:
            self._decode_step()
        elif not self.pending:
            try:
                self.waiting.append(self._queue.get(timeout=0.05))
            except queue.Empty:
                pass

    def _fail_all(self, message: str) -> None:
        jobs = {id(j): j for j in [r.job for r in self.rows] + [p.job for p in self.pending] + list(self.waiting)}
        while not self._queue.empty():
            job = self._queue.get_nowait()
            jobs[id(job)] = job
        for job in jobs.values():
            job.emit(Event("error", message=message))
        self.rows, self.pending, self.waiting, self.active = [], deque(), deque(), set()
        self.batch = BatchCache()

    def _drop_cancelled(self) -> None:
        gone = {id(r.job) for r in self.rows if r.job.cancelled.is_set()}
        gone |= {id(p.job) for p in self.pending if p.job.cancelled.is_set()}
        if gone:
            keep = [i for i, r in enumerate(self.rows) if id(r.job) not in gone]
            self.batch.keep_rows(keep)
            self.rows = [self.rows[i] for i in keep]
            self.pending = deque(p for p in self.pending if id(p.job) not in gone)
            self.active -= gone
            self.cancelled += len(gone)
        dropped = [j for j in self.waiting if j.cancelled.is_set()]
        if dropped:
            self.waiting = deque(j for j in self.waiting if not j.cancelled.is_set())
            self.cancelled += len(dropped)

    def _admit(self) -> None:
        while True:
            try:
                self.waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        while self.waiting and len(self.active) < self.max_concurrency:
            job = self.waiting.popleft()
            if job.cancelled.is_set():
                self.cancelled += 1
                continue
            self.active.add(id(job))
            cache = [BatchLayerCache() for _ in self.model.layers]
            shared, kv = self.prompt_cache.lookup(job.prompt)
            reuse = min(shared, len(job.prompt) - 1)
            if reuse > 0:
                cache = [BatchLayerCache(k[..., :reuse, :], v[..., :reuse, :]) for k, v in kv]
                job.cached_tokens = reuse
            self.pending.append(_Pending(job, cache, job.prompt[reuse:]))

    def _prefill_chunk(self) -> None:
        """One chunk of the oldest pending prompt, the same chunks `generate` uses; the last one starts rows."""
        p = self.pending[0]
        chunk, p.remaining = p.remaining[: self.prefill_step_size], p.remaining[self.prefill_step_size :]
        out = self.model(mx.array([chunk], dtype=mx.int32), past_key_values=p.cache, use_cache=True, logits_to_keep=1)
        if p.remaining:
            mx.eval([a for layer in p.cache for a in layer.state])
            return
        self.pending.popleft()
        logits = out.logits[:, -1, :]
        job = p.job
        texts = token_texts(self.tokenizer) if job.options.recognizer is not None or job.options.logprobs else None
        kv = row_kv(p.cache)
        started = []
        for index in range(job.n):
            sampler = RowSampler(job.options, job.prompt, logits.shape[-1], self.eos, texts, seed_offset=index)
            row = _Row(job, index, sampler, _detokenizer(self.tokenizer))
            self.batch.add_row(kv)
            self.rows.append(row)
            started.append((row, sampler.pick(logits, self._remaining(row))))
        job.open_rows = job.n
        self._apply(started)

    def _decode_step(self) -> None:
        rows = self.rows
        tokens = mx.array([[r.next_token] for r in rows], dtype=mx.int32)
        mask, positions = self.batch.step_inputs()
        out = self.model(
            tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.batch.layers,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        for r in rows:
            r.fed.append(r.next_token)
        plain = [i for i, r in enumerate(rows) if r.sampler.plain_greedy]
        picks: dict[int, Pick] = {}
        if len(plain) > 1:
            group = logits if len(plain) == len(rows) else logits[mx.array(plain, dtype=mx.int32)]
            picks = dict(zip(plain, pick_greedy_rows([rows[i].sampler for i in plain], group)))
        for i, r in enumerate(rows):
            if i not in picks:
                picks[i] = r.sampler.pick(logits[i : i + 1], self._remaining(r))
        self._apply([(r, picks[i]) for i, r in enumerate(rows)])

    def _remaining(self, row: _Row) -> int:
        """Tokens the row may still produce, the one being chosen included."""
        return min(row.job.max_tokens - row.generated, self.context_length - len(row.fed))

    def _apply(self, picks: list[tuple[_Row, Pick]]) -> None:
        """Evaluate a step's picks, stream their text, and retire the rows that finished."""
        arrays = {id(a): a for _, pick in picks for a in pick.arrays()}
        mx.eval(list(arrays.values()))
        host = {}
        for row, pick in picks:
            if id(pick.token) not in host:
                host[id(pick.token)] = pick.token.tolist()
            token = host[id(pick.token)][pick.index]
            row.sampler.accept(token)
            self._emit_token(row, token, pick)
        done = [i for i, r in enumerate(self.rows) if r.finish_reason is not None]
        if not done:
            return
        for i in done:
            row = self.rows[i]
            self.prompt_cache.insert(row.fed, self.batch.row(i))
            job = row.job
            job.open_rows -= 1
            if job.open_rows == 0:
                self.active.discard(id(job))
                usage = {
                    "prompt_tokens": len(job.prompt),
                    "completion_tokens": job.completion_tokens,
                    "cached_tokens": job.cached_tokens,
                }
                job.emit(Event("done", usage=usage))
        keep = [i for i in range(len(self.rows)) if i not in set(done)]
        self.batch.keep_rows(keep)
        self.rows = [self.rows[i] for i in keep]

    def _emit_token(self, row: _Row, token: int, pick: Pick) -> None:
        job = row.job
        row.generated += 1
        job.completion_tokens += 1
        event = Event("token", index=row.index, token=token)
        if token in self.eos:
            text, _ = row.stop.feed(row.detok.finalize())
            event.text, row.finish_reason = text + row.stop.flush(), "stop"
        else:
            if pick.logprob is not None:
                event.logprob = pick.logprob.item()
                if pick.top_ids is not None:
                    event.top = list(zip(pick.top_ids.tolist(), pick.top_logprobs.tolist()))
            text, stopped = row.stop.feed(row.detok.add_token(token))
            if stopped or row.sampler.json_done:
                row.finish_reason = "stop"
            elif row.generated >= job.max_tokens or len(row.fed) >= self.context_length:
                row.finish_reason = "length"
            if row.finish_reason is not None and not stopped:
                tail, stopped = row.stop.feed(row.detok.finalize())
                text += tail if stopped else tail + row.stop.flush()
                row.finish_reason = "stop" if stopped or row.sampler.json_done else row.finish_reason
            event.text = text
        event.finish_reason = row.finish_reason
        if row.finish_reason is None:
            row.next_token = token
        job.emit(event)
