"""Fine-tuning data: train.jsonl / valid.jsonl lines -> token ids and targets for each task, then padded batches.

Accepted lines (one JSON object each):
- causal-lm: {"text"}, {"prompt", "completion"}, or {"messages": [{"role", "content"}, ...]} (chat template);
  with prompt masking only the completion / last assistant message is scored.
- sequence-classification: {"text", "label"} (label: an integer id or a name).
- token-classification: {"tokens": [words], "labels": [one per word]}; a word's first piece carries its label.
- question-answering: {"question", "context", "answers": {"text": [..], "answer_start": [..]}} (SQuAD) or
  {"question", "context", "answer"}; the answer's token span is the target.
Batches pad on the right: with causal attention, right padding never changes the outputs at real tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import MlxLlamaError

IGNORE = -100
PAD_MULTIPLE = 32
TASKS = ("causal-lm", "sequence-classification", "token-classification", "question-answering")


class DataError(MlxLlamaError):
    """A data file is missing, malformed, or does not fit the task."""


@dataclass
class Example:
    """One tokenised line: ids plus per-token labels (causal LM, token cls), a label, or a QA span."""

    input_ids: list[int]
    token_labels: list[int] | None = None
    label: int | None = None
    span: tuple[int, int] | None = None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: missing (the data directory needs train.jsonl, and valid.jsonl to validate)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """The one place that renders a conversation with the tokenizer's chat template (ids, specials included)."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True))


def label_names(rows: list[dict[str, Any]], key: str = "label") -> list[str] | None:
    """Sorted label names when the labels are strings (None when they are integer ids)."""
    values = []
    for row in rows:
        v = row.get(key)
        values.extend(v if isinstance(v, list) else [v])
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return sorted({str(v) for v in values})


class Encoder:
    """Turns rows into Examples for one task; errors name the file, line and field."""

    def __init__(
        self,
        tokenizer: Any,
        task: str,
        mask_prompt: bool = False,
        max_seq_length: int = 2048,
        label2id: dict[str, int] | None = None,
    ) -> None:
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        self.tok, self.task, self.mask_prompt = tokenizer, task, mask_prompt
        self.max_len, self.label2id = max_seq_length, label2id

    def encode_file(self, path: Path) -> list[Example]:
        out = []
        for n, row in enumerate(read_jsonl(path), 1):
            try:
                out.append(self.encode(row))
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{path}: line {n}: {e} (task {self.task}; see `mlx-llama lora --help`)") from None
        return out

    def encode(self, row: dict[str, Any]) -> Example:
        ex = getattr(self, "_" + self.task.replace("-", "_"))(row)
        ex.input_ids = ex.input_ids[: self.max_len]
        if ex.token_labels is not None:
            ex.token_labels = ex.token_labels[: self.max_len]
        return ex

    def _label(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and self.label2id and value in self.label2id:
            return self.label2id[value]
        known = f" (known: {', '.join(sorted(self.label2id))})" if self.label2id else ""
        raise ValueError(f"label {value!r} is neither an integer id nor a known label name{known}")

    def _with_eos(self, ids: list[int]) -> list[int]:
        eos = self.tok.eos_token_id
        return ids if eos is None or (ids and ids[-1] == eos) else ids + [eos]

    def _causal_lm(self, row: dict[str, Any]) -> Example:
        if "messages" in row:
            messages = row["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("'messages' must be a non-empty list of {'role', 'content'}")
            ids = self._with_eos(chat_ids(self.tok, messages))
            prompt = len(chat_ids(self.tok, messages[:-1], True)) if len(messages) > 1 else 0
        elif "prompt" in row or "completion" in row:
            prompt_text, completion = str(row["prompt"]), str(row["completion"])
            ids = self._with_eos(self.tok.encode(prompt_text + completion))
            prompt = len(self.tok.encode(prompt_text))
        elif "text" in row:
            ids, prompt = self._with_eos(self.tok.encode(str(row["text"]))), 0
        else:
            raise KeyError("expected 'text', 'prompt'+'completion' or 'messages'")
        labels = list(ids)
        if self.mask_prompt:
            labels[:prompt] = [IGNORE] * min(prompt, len(ids))
        return Example(ids, token_labels=labels)

    def _sequence_classification(self, row: dict[str, Any]) -> Example:
        return Example(self.tok.encode(str(row["text"])), label=self._label(row["label"]))

    def _token_classification(self, row: dict[str, Any]) -> Example:
        words, word_labels = row["tokens"], row["labels"]
        if len(words) != len(word_labels):
            raise ValueError(f"{len(words)} tokens but {len(word_labels)} labels")
        ids = self.tok.encode("")  # bos only
        labels = [IGNORE] * len(ids)
        for word, label in zip(words, word_labels, strict=True):
            pieces = self.tok.encode(str(word), add_special_tokens=False)
            ids += pieces
            labels += [self._label(label)] + [IGNORE] * (len(pieces) - 1)
        return Example(ids, token_labels=labels)

    def _question_answering(self, row: dict[str, Any]) -> Example:
        question, context = str(row["question"]), str(row["context"])
        if row.get("answers"):
            answer, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
        else:
            answer, start = str(row["answer"]), context.find(str(row["answer"]))
        if start < 0 or context[start : start + len(answer)] != answer:
            raise ValueError(f"answer {answer!r} is not in the context at {start}")
        head = self.tok.encode(question + "\n")
        body = self.tok.encode(context, add_special_tokens=False)
        ends = [len(self.tok.decode(body[: i + 1])) for i in range(len(body))]  # char end of each token
        first = next(i for i, e in enumerate(ends) if e > start)
        last = next(i for i, e in enumerate(ends) if e >= start + len(answer))
        ids = head + body
        return Example(ids, span=(len(head) + first, len(head) + last))


def batch_arrays(examples: list[Example], task: str, pad_id: int) -> tuple[dict[str, mx.array], int]:
    """Right-padded arrays for the model call (its own loss arguments) and the count of real tokens."""
    longest = max(len(e.input_ids) for e in examples)
    width = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE  # few distinct shapes: each new one recompiles the step
    ids = np.full((len(examples), width), pad_id, np.int32)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = e.input_ids
    batch: dict[str, mx.array] = {"input_ids": mx.array(ids)}
    if task in ("causal-lm", "token-classification"):
        labels = np.full((len(examples), width), IGNORE, np.int32)
        for i, e in enumerate(examples):
            labels[i, : len(e.token_labels)] = e.token_labels
        batch["labels"] = mx.array(labels)
    elif task == "sequence-classification":
        batch["labels"] = mx.array([e.label for e in examples], mx.int32)
    else:
        batch["start_positions"] = mx.array([e.span[0] for e in examples], mx.int32)
        batch["end_positions"] = mx.array([e.span[1] for e in examples], mx.int32)
    return batch, sum(len(e.input_ids) for e in examples)


def iterate_batches(
    examples: list[Example], batch_size: int, task: str, pad_id: int, shuffle: bool = True, seed: int = 0
) -> Iterator[tuple[dict[str, mx.array], int]]:
    """Endless batches (a reshuffle each epoch) when `shuffle`, else one pass in order."""
    if batch_size > len(examples) and shuffle:
        raise DataError(f"batch size {batch_size} is larger than the {len(examples)} training examples")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(examples)) if shuffle else np.arange(len(examples))
        for start in range(0, len(order) - (batch_size - 1 if shuffle else 0), batch_size):
            yield batch_arrays([examples[i] for i in order[start : start + batch_size]], task, pad_id)
        if not shuffle:
            return
