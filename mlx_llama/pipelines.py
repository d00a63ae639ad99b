"""`pipeline(task, model=...)`: Transformers' pipelines for the tasks LLaMA has heads for.

Outputs have Transformers' shapes and keys: text-generation gives `[{"generated_text": ...}]` per prompt
(prompt included unless `return_full_text=False`; a chat gets the assistant message appended),
text-classification `{"label", "score"}`, token-classification one dict per labelled token (or per group
with aggregation_strategy="simple"), question-answering `{"score", "start", "end", "answer"}`. Inputs are
processed one at a time, as Transformers does without `batch_size`; text generation with `batch_size` pads on
the left.
Text generation uses the pipeline defaults of Transformers 4.57 (sampling, temperature 0.7, 256 new
tokens) unless the call or the model's generation config say otherwise.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import ConfigError

TEXT_GENERATION_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Pipeline:
    """Holds a model and its tokenizer; `__call__` takes one input or a list of them."""

    task = ""

    def __init__(self, model, tokenizer, batch_size: int | None = None) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        if isinstance(inputs, (list, tuple)) and not self._is_single(inputs):
            return [self.run_one(x, **kwargs) for x in inputs]
        return self.run_one(inputs, **kwargs)

    @staticmethod
    def _is_single(inputs: Any) -> bool:
        return False

    def run_one(self, inputs: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class TextGenerationPipeline(Pipeline):
    task = "text-generation"

    @staticmethod
    def _is_single(inputs: Any) -> bool:
        return bool(inputs) and isinstance(inputs[0], dict)  # one chat: a list of messages

    def __call__(self, inputs: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        batch_size = batch_size or self.batch_size
        if batch_size and batch_size > 1 and isinstance(inputs, (list, tuple)) and not self._is_single(inputs):
            out = []
            for start in range(0, len(inputs), batch_size):
                out.extend(self._run_batch(list(inputs[start : start + batch_size]), **kwargs))
            return out
        return super().__call__(inputs, **kwargs)

    def _encode(self, prompt: Any, prefix: str, add_special_tokens: bool | None) -> list[int]:
        if isinstance(prompt, (list, tuple)):  # a chat
            last = prompt[-1].get("role") if prompt else None
            if last == "assistant":
                raise ConfigError(
                    "continuing a final assistant message is not supported; end the chat with a user message"
                )
            return list(self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True))
        if not isinstance(prompt, str):
            raise ConfigError(f"text-generation takes a string, a list of strings or a chat, got {type(prompt)}")
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return list(self.tokenizer(prefix + prompt, **kw)["input_ids"])

    def _generation_defaults(self) -> dict[str, Any]:
        defaults = dict(TEXT_GENERATION_DEFAULTS)
        own = getattr(self.model, "generation_config", None)
        if own is not None and getattr(own, "max_length", None) not in (None, 20):
            defaults.pop("max_new_tokens")  # the model's own max_length wins over the pipeline's length default
        return defaults

    def _generate(self, ids: np.ndarray, mask: np.ndarray, kwargs: dict[str, Any]) -> np.ndarray:
        kwargs.setdefault("generation_config", self._generation_defaults())
        kwargs.setdefault("tokenizer", self.tokenizer)
        return np.array(self.model.generate(mx.array(ids), attention_mask=mx.array(mask), **kwargs))

    def _records(self, prompt: Any, prompt_ids: list[int], sequences: np.ndarray, opts: dict[str, Any]) -> list:
        if opts["return_tensors"]:
            return [{"generated_token_ids": seq.tolist()} for seq in sequences]
        decode = dict(
            skip_special_tokens=opts["skip_special_tokens"],
            clean_up_tokenization_spaces=opts["clean_up_tokenization_spaces"],
        )
        prompt_len = len(self.tokenizer.decode(prompt_ids, **decode))
        records = []
        for seq in sequences:
            new_text = self.tokenizer.decode(seq.tolist(), **decode)[prompt_len:]
            if not opts["return_full_text"]:
                records.append({"generated_text": new_text})
            elif isinstance(prompt, str):
                records.append({"generated_text": prompt + new_text})
            else:
                records.append({"generated_text": [*prompt, {"role": "assistant", "content": new_text}]})
        return records

    @staticmethod
    def _options(kwargs: dict[str, Any]) -> dict[str, Any]:
        full = kwargs.pop("return_full_text", None)
        return {
            "return_full_text": True if full is None else full,
            "return_tensors": kwargs.pop("return_tensors", False),
            "skip_special_tokens": kwargs.pop("skip_special_tokens", True),
            "clean_up_tokenization_spaces": kwargs.pop("clean_up_tokenization_spaces", True),
            "prefix": kwargs.pop("prefix", ""),
            "add_special_tokens": kwargs.pop("add_special_tokens", None),
        }

    def run_one(self, prompt: Any, **kwargs: Any) -> list[dict[str, Any]]:
        opts = self._options(kwargs)
        ids = self._encode(prompt, opts["prefix"], opts["add_special_tokens"])
        row = np.array([ids], dtype=np.int64)
        sequences = self._generate(row, np.ones_like(row), kwargs)
        return self._records(prompt, ids, sequences, opts)

    def _run_batch(self, prompts: list, **kwargs: Any) -> list:
        """Left-padded batch (the tokenizer's pad id, else eos); each row's records as if run alone."""
        opts = self._options(kwargs)
        rows = [self._encode(p, opts["prefix"], opts["add_special_tokens"]) for p in prompts]
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ConfigError("batching needs a pad token: set tokenizer.pad_token (e.g. to the eos token)")
        width = max(map(len, rows))
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :], mask[r, width - len(row) :] = row, 1
        kwargs.setdefault("pad_token_id", pad)
        sequences = self._generate(ids, mask, kwargs)
        per_row = sequences.shape[0] // len(rows)
        return [
            self._records(p, ids[r].tolist(), sequences[r * per_row : (r + 1) * per_row], opts)
            for r, p in enumerate(prompts)
        ]


class TextClassificationPipeline(Pipeline):
    task = "text-classification"
    _UNSET = object()

    def __call__(self, inputs: Any, top_k: Any = _UNSET, **kwargs: Any) -> Any:
        legacy = top_k is self._UNSET
        out = super().__call__(inputs, top_k=1 if legacy else top_k, legacy=legacy, **kwargs)
        return [out] if isinstance(inputs, str) and legacy else out

    def scores(self, text: str, function_to_apply: str | None) -> np.ndarray:
        logits = np.array(self.model(mx.array([self.tokenizer(text)["input_ids"]])).logits.astype(mx.float32))[0]
        config = self.model.config
        if function_to_apply is None:
            multi = config.problem_type == "multi_label_classification" or config.num_labels == 1
            function_to_apply = "sigmoid" if multi else "softmax"
        if function_to_apply == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        if function_to_apply == "softmax":
            return _softmax(logits)
        if function_to_apply == "none":
            return logits
        raise ConfigError(f"function_to_apply must be 'sigmoid', 'softmax' or 'none', got {function_to_apply!r}")

    def run_one(
        self, text: str, top_k: int | None = 1, legacy: bool = False, function_to_apply: str | None = None
    ) -> Any:
        scores = self.scores(text, function_to_apply)
        labels = self.model.config.id2label
        if legacy and top_k == 1:
            best = int(scores.argmax())
            return {"label": labels[best], "score": float(scores[best])}
        order = np.argsort(-scores, kind="stable")[: None if top_k is None else top_k]
        return [{"label": labels[int(i)], "score": float(scores[i])} for i in order]


class TokenClassificationPipeline(Pipeline):
    task = "token-classification"

    def run_one(
        self, text: str, ignore_labels: list[str] | None = None, aggregation_strategy: str | None = None
    ) -> list[dict[str, Any]]:
        strategy = (aggregation_strategy or "none").lower()
        if strategy not in ("none", "simple"):
            raise ConfigError(
                f"aggregation_strategy={aggregation_strategy!r} is not available; use 'none' or "
                "'simple' (word-level strategies need word boundaries)"
            )
        ignore = ["O"] if ignore_labels is None else ignore_labels
        ids, offsets = self._encode_with_offsets(text)
        logits = np.array(self.model(mx.array([ids])).logits.astype(mx.float32))[0]
        scores, labels = _softmax(logits), self.model.config.id2label
        special_ids = set(self.tokenizer.all_special_ids)
        entities = []
        for index, token in enumerate(ids):
            if token in special_ids:
                continue
            best = int(scores[index].argmax())
            start, end = offsets[index] if offsets is not None else (None, None)
            entities.append(
                {
                    "entity": labels[best],
                    "score": float(scores[index, best]),
                    "index": index,
                    "word": self.tokenizer.convert_ids_to_tokens(token),
                    "start": start,
                    "end": end,
                    "id": token,
                }
            )
        if strategy == "simple":
            return [g for g in self._groups(entities) if g["entity_group"] not in ignore]
        return [{k: v for k, v in e.items() if k != "id"} for e in entities if e["entity"] not in ignore]

    def _groups(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Transformers' "simple" grouping: adjacent tokens of one tag, a "B-" starting a new group."""
        groups: list[list[dict[str, Any]]] = []
        for entity in entities:
            bi, tag = _tag(entity["entity"])
            if groups and tag == _tag(groups[-1][-1]["entity"])[1] and bi != "B":
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [
            {
                "entity_group": group[0]["entity"].split("-", 1)[-1],
                "score": float(np.mean([e["score"] for e in group])),
                "word": self.tokenizer.decode([e["id"] for e in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
            for group in groups
        ]

    def _encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
        """Ids, and character offsets when the tokenizer is a fast one (a `tokenizers` backend has them)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return list(self.tokenizer(text)["input_ids"]), None
        encoding = backend.encode(text)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]


def _tag(label: str) -> tuple[str, str]:
    """("B" | "I", tag) of an IOB label; a label without a prefix continues ("I")."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


class QuestionAnsweringPipeline(Pipeline):
    """Best span of the context by p(start) * p(end) over context tokens (end >= start, at most
    `max_answer_len` tokens), as Transformers scores it; the answer is the decoded span."""

    task = "question-answering"

    def __call__(self, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
        if isinstance(question, dict):
            question, context = question["question"], question["context"]
        if isinstance(question, (list, tuple)):
            return [self.run_one(q, c, **kwargs) for q, c in zip(question, context)]
        return self.run_one(question, context, **kwargs)

    def run_one(self, question: str, context: str, top_k: int = 1, max_answer_len: int = 15) -> Any:
        tok = self.tokenizer
        q_ids = list(tok(question)["input_ids"])
        pieces = tok.tokenize(context)
        c_ids = [tok.convert_tokens_to_ids(p) for p in pieces]
        out = self.model(mx.array([q_ids + c_ids]))
        start = _softmax(np.array(out.start_logits.astype(mx.float32))[0][len(q_ids) :])
        end = _softmax(np.array(out.end_logits.astype(mx.float32))[0][len(q_ids) :])
        span = np.triu(np.tril(np.outer(start, end), max_answer_len - 1))
        order = np.argsort(-span.reshape(-1), kind="stable")[:top_k]
        answers = []
        for flat in order:
            s, e = divmod(int(flat), span.shape[1])
            answer = tok.decode(c_ids[s : e + 1]).strip()
            begin = context.find(answer) if answer else -1
            answers.append(
                {
                    "score": float(span[s, e]),
                    "start": begin,
                    "end": begin + len(answer) if begin >= 0 else -1,
                    "answer": answer,
                }
            )
        return answers[0] if top_k == 1 else answers


TASKS: dict[str, tuple[type[Pipeline], str]] = {
    "text-generation": (TextGenerationPipeline, "AutoModelForCausalLM"),
    "text-classification": (TextClassificationPipeline, "AutoModelForSequenceClassification"),
    "sentiment-analysis": (TextClassificationPipeline, "AutoModelForSequenceClassification"),
    "token-classification": (TokenClassificationPipeline, "AutoModelForTokenClassification"),
    "ner": (TokenClassificationPipeline, "AutoModelForTokenClassification"),
    "question-answering": (QuestionAnsweringPipeline, "AutoModelForQuestionAnswering"),
}


def _check_device(device: Any) -> None:
    if device is None:
        return
    current = "cpu" if mx.default_device().type == mx.cpu else "gpu"
    asked = "cpu" if device in (-1, "cpu") else "gpu"
    if asked != current:
        warnings.warn(
            f"device={device!r}: MLX runs on its default device ({current}); use mx.set_default_device to change it",
            stacklevel=3,
        )


def pipeline(
    task: str,
    model: Any = None,
    tokenizer: Any = None,
    *,
    dtype: Any = None,
    torch_dtype: Any = None,
    device: Any = None,
    batch_size: int | None = None,
    model_kwargs: dict | None = None,
) -> Pipeline:
    """Transformers' `pipeline()` for a local directory / Hub id or an already loaded model and tokenizer."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    if model is None:
        raise ConfigError("pipeline() needs model= (a model directory, a Hub id, or a loaded model)")
    _check_device(device)
    cls, auto_name = TASKS[task]
    if isinstance(model, (str, os.PathLike)):
        from . import auto

        source = model
        model = getattr(auto, auto_name).from_pretrained(
            source, dtype=dtype, torch_dtype=torch_dtype, **(model_kwargs or {})
        )
        if tokenizer is None:
            tokenizer = source
    if tokenizer is None:
        raise ConfigError("pipeline() with a loaded model also needs tokenizer=")
    if isinstance(tokenizer, (str, os.PathLike)):
        from .auto import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return cls(model, tokenizer, batch_size)
