"""OpenAI response shapes: chat.completion(.chunk) and text_completion objects built from scheduler events."""

from __future__ import annotations

import time
import uuid

from .protocol import Request
from .scheduler import Event
from .token_text import token_bytes, token_texts


def usage_of(usage: dict) -> dict:
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]},
    }


class ResponseBuilder:
    """Accumulates one request's events into the final object, or turns each into stream chunks."""

    def __init__(self, kind: str, model: str, request: Request, tokenizer, prompt_tokens: int) -> None:
        self.kind, self.model, self.request, self.tokenizer = kind, model, request, tokenizer
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.texts = [""] * request.n
        self.finish = [None] * request.n
        self.logprobs: list[list] = [[] for _ in range(request.n)]
        self.usage: dict | None = None
        self._token_texts = token_texts(tokenizer) if request.options.logprobs is not None else None

    # ---- logprobs ------------------------------------------------------------------------------------------

    def _text(self, token: int) -> str:
        text = self._token_texts[token] if token < len(self._token_texts) else None
        return text if text is not None else self.tokenizer.convert_ids_to_tokens(token)

    def _logprob_entry(self, event: Event) -> dict:
        text = self._text(event.token)
        if self.kind == "chat":
            top = [
                {"token": self._text(t), "logprob": lp, "bytes": token_bytes(self._text(t))}
                for t, lp in event.top or []
            ]
            return {"token": text, "logprob": event.logprob, "bytes": token_bytes(text), "top_logprobs": top}
        return {"token": text, "logprob": event.logprob, "top": {self._text(t): lp for t, lp in event.top or []}}

    def _completion_logprobs(self, entries: list[dict], start: int) -> dict:
        offsets, at = [], start
        for e in entries:
            offsets.append(at)
            at += len(e["token"])
        return {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [e["top"] for e in entries],
            "text_offset": offsets,
        }

    def _logprobs_field(self, entries: list[dict], start: int = 0):
        if self.request.options.logprobs is None:
            return None
        if self.kind == "chat":
            return {"content": entries}
        return self._completion_logprobs(entries, start)

    # ---- non-streaming -------------------------------------------------------------------------------------

    def add(self, event: Event) -> None:
        if event.kind == "done":
            self.usage = usage_of(event.usage)
            return
        i = event.index
        self.texts[i] += event.text
        if event.logprob is not None:
            self.logprobs[i].append(self._logprob_entry(event))
        if event.finish_reason is not None:
            self.finish[i] = event.finish_reason

    def final(self) -> dict:
        choices = []
        for i in range(self.request.n):
            choice = {"index": i, "logprobs": self._logprobs_field(self.logprobs[i]), "finish_reason": self.finish[i]}
            if self.kind == "chat":
                choice["message"] = {"role": "assistant", "content": self.texts[i]}
            else:
                choice["text"] = self.texts[i]
            choices.append(choice)
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage,
            "system_fingerprint": None,
        }

    # ---- streaming -----------------------------------------------------------------------------------------

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        chunk = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "system_fingerprint": None,
        }
        if self.request.include_usage:
            chunk["usage"] = usage
        return chunk

    def _choice(self, i: int, text: str | None, logprobs, finish: str | None, role: bool = False) -> dict:
        if self.kind == "chat":
            delta = {} if text is None else {"content": text}
            if role:
                delta["role"] = "assistant"
            return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {"index": i, "text": text or "", "logprobs": logprobs, "finish_reason": finish}

    def opening(self) -> list[dict]:
        """Chat streams open with the assistant role for every choice."""
        if self.kind != "chat":
            return []
        return [self._chunk([self._choice(i, "", None, None, role=True)]) for i in range(self.request.n)]

    def chunks(self, event: Event) -> list[dict]:
        if event.kind == "done":
            return [self._chunk([], usage_of(event.usage))] if self.request.include_usage else []
        i = event.index
        out = []
        entries = [self._logprob_entry(event)] if event.logprob is not None else []
        if event.text or entries:
            start = len(self.texts[i])
            self.texts[i] += event.text
            out.append(self._chunk([self._choice(i, event.text, self._logprobs_field(entries, start), None)]))
        if event.finish_reason is not None:
            empty = None if self.kind == "chat" else ""
            out.append(self._chunk([self._choice(i, empty, None, event.finish_reason)]))
        return out
