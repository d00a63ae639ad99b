"""`serve` across ranks (tensor mode): rank 0 serves HTTP; every rank runs the same scheduler steps.

Continuous batching decides what runs from arrivals and cancellations, which only rank 0 sees. So at the
start of every iteration rank 0 sends the others what changed since the last one (new jobs, cancelled job
ids, stop) as JSON, and every rank's scheduler then admits, prefills, decodes and drops exactly the same
work from the same snapshot; only rank 0's jobs emit to clients. (Pipeline mode is not offered here: the
server's batch cache would have to learn about layers held by other ranks.)
"""

from __future__ import annotations

import queue
from dataclasses import fields
from typing import Any

import mlx.core as mx

from .parallel import broadcast_text
from .server.json_constraint import JsonRecognizer
from .server.sampler import SamplingOptions
from .server.scheduler import Job, Scheduler


def _tagged(value: Any) -> Any:
    """A JSON-mode schema node as plain JSON: tuples and frozensets tagged, dict keys kept as pairs."""
    if isinstance(value, dict):
        return {"dict": [[_tagged(k), _tagged(v)] for k, v in value.items()]}
    if isinstance(value, (tuple, frozenset, list)):
        return {type(value).__name__: [_tagged(v) for v in value]}
    return value


def _untagged(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    ((kind, items),) = value.items()
    if kind == "dict":
        return {_untagged(k): _untagged(v) for k, v in items}
    return {"tuple": tuple, "frozenset": frozenset, "list": list}[kind](_untagged(v) for v in items)


def _options_json(options: SamplingOptions) -> dict[str, Any]:
    out = {f.name: getattr(options, f.name) for f in fields(options)}
    out["logit_bias"] = [[int(k), float(v)] for k, v in options.logit_bias.items()]
    out["recognizer"] = None if options.recognizer is None else _tagged(options.recognizer.node)
    return out


def _options(data: dict[str, Any]) -> SamplingOptions:
    data = dict(data)
    data["logit_bias"] = {int(k): v for k, v in data["logit_bias"]}
    data["recognizer"] = None if data["recognizer"] is None else JsonRecognizer(_untagged(data["recognizer"]))
    return SamplingOptions(**data)


def _ignore(event: Any) -> None:
    """Followers' jobs have no client."""


class MirroredScheduler(Scheduler):
    """A Scheduler whose every iteration starts from rank 0's snapshot of arrivals and cancellations."""

    def __init__(self, model, tokenizer, group: mx.distributed.Group, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.group, self.main = group, group.rank() == 0
        self._inbox: queue.Queue[Job] = queue.Queue()  # rank 0's arrivals, read only by `_sync`
        self._jobs: dict[int, tuple[Job | None, Job]] = {}  # id -> (rank 0's client job, the scheduled copy)
        self._next_id = 0
        self._stop_sent = False

    def submit(self, job: Job) -> None:
        if self._stopping.is_set():
            super().submit(job)  # answers "shutting down"
            return
        self._inbox.put(job)

    def run_until(self, done) -> None:
        try:
            super().run_until(done)
        finally:
            if self.main and not self._stop_sent:  # release the other ranks
                self._send({"stop": True, "jobs": [], "cancel": []})

    def _send(self, message: dict | None) -> dict:
        import json

        return json.loads(broadcast_text(None if message is None else json.dumps(message), self.group))

    def _snapshot(self) -> dict:
        """Rank 0: the arrivals (waiting briefly when idle) and cancellations since the last iteration."""
        idle = not (self.rows or self.pending or self.waiting)
        arrivals = []
        try:
            arrivals.append(self._inbox.get(timeout=0.05) if idle else self._inbox.get_nowait())
            while True:
                arrivals.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        jobs = []
        for job in arrivals:
            self._jobs[self._next_id] = (job, None)
            jobs.append(
                {
                    "id": self._next_id,
                    "prompt": job.prompt,
                    "max_tokens": job.max_tokens,
                    "n": job.n,
                    "stop": job.stop,
                    "options": _options_json(job.options),
                }
            )
            self._next_id += 1
        cancel = [
            i
            for i, (client, copy) in self._jobs.items()
            if client is not None and copy is not None and client.cancelled.is_set()
        ]
        return {"stop": self._stopping.is_set(), "jobs": jobs, "cancel": cancel}

    def _sync(self) -> bool:
        """Apply the snapshot on every rank; False when rank 0 stopped."""
        message = self._send(self._snapshot() if self.main else None)
        if message["stop"]:
            self._stopping.set()
            self._stop_sent = True
            return False
        for spec in message["jobs"]:
            client = self._jobs.get(spec["id"], (None, None))[0]
            copy = Job(
                spec["prompt"],
                spec["max_tokens"],
                _options(spec["options"]),
                client.emit if client is not None else _ignore,
                n=spec["n"],
                stop=spec["stop"],
            )
            self._jobs[spec["id"]] = (client, copy)
            self.waiting.append(copy)
        for i in message["cancel"]:
            self._jobs[i][1].cancelled.set()
        return True

    def _prune(self) -> None:
        waiting = {id(j) for j in self.waiting}
        self._jobs = {
            i: (client, copy)
            for i, (client, copy) in self._jobs.items()
            if copy is None or id(copy) in self.active or id(copy) in waiting
        }

    def _iteration(self) -> None:
        if not self._sync():
            return
        self._drop_cancelled()
        self._admit()  # its queue stays empty: arrivals come only through `_sync`
        if self.pending:
            self._prefill_chunk()
        if self.rows:
            self._decode_step()
        self._prune()


def make_scheduler(model, tokenizer, parallel: str | None, **kwargs: Any) -> Scheduler:
    """The server's scheduler: mirrored across the ranks when the model was loaded with `parallel`."""
    if parallel is None:
        return Scheduler(model, tokenizer, **kwargs)
    if parallel != "tensor":
        from .errors import ConfigError

        raise ConfigError(
            f"serve supports --parallel tensor only (got {parallel!r}): the server's batch cache "
            "holds every layer on every rank"
        )
    return MirroredScheduler(model, tokenizer, mx.distributed.init(), **kwargs)


def is_follower(parallel: str | None) -> bool:
    """Whether this process is a rank other than 0 (it computes along without HTTP)."""
    return parallel is not None and mx.distributed.init().rank() != 0
