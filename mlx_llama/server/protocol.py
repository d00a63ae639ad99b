"""Request validation for the OpenAI endpoints: every field is checked or refused, never silently ignored.

A bad request raises APIError, which the app turns into OpenAI's error body
`{"error": {"message", "type", "param", "code"}}` with status 400 (401, 404 for auth and paths).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .json_constraint import SchemaError, recognizer_for
from .sampler import SamplingOptions

MAX_N = 16
MAX_STOPS = 4
MAX_TOP_LOGPROBS = 20

COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "stop",
    "seed",
    "n",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "stream",
    "stream_options",
    "user",
    "response_format",
    "logprobs",
}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "echo", "best_of", "suffix"}
ROLES = {"system", "developer", "user", "assistant"}


class APIError(Exception):
    """An error to send as OpenAI's JSON body."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = message, param, code, status, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Request:
    """A validated request: what the scheduler needs plus how to shape the response."""

    kind: str  # "chat" or "completion"
    options: SamplingOptions
    max_tokens: int | None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    messages: list[dict] | None = None
    prompt: str | list[int] | None = None
    model: str = ""


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(f"We could not parse the JSON body of your request: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError("The request body must be a JSON object.", code="invalid_json")
    return body


def _type_error(name: str, expected: str, value: Any) -> APIError:
    return APIError(
        f"Invalid type for '{name}': expected {expected}, but got {type(value).__name__} ({value!r}).",
        param=name,
        code="invalid_type",
    )


def _number(body: dict, name: str, default: float, low: float, high: float, open_low: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _type_error(name, "a number", value)
    if value < low or value > high or (open_low and value == low):
        bound = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
        raise APIError(f"Invalid value for '{name}': {value} is not in {bound}.", param=name, code="invalid_value")
    return float(value)


def _integer(body: dict, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer", value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise APIError(
            f"Invalid value for '{name}': {value}; expected an integer {bound}.", param=name, code="invalid_value"
        )
    return value


def _bool(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _type_error(name, "a boolean", value)
    return value


def _stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _type_error("stop", "a string or a list of strings", value)
    if len(stops) > MAX_STOPS:
        raise APIError(
            f"'stop' takes at most {MAX_STOPS} strings, got {len(stops)}.", param="stop", code="invalid_value"
        )
    return [s for s in stops if s]


def _logit_bias(body: dict, vocab: int) -> dict[int, float]:
    value = body.get("logit_bias")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error("logit_bias", "an object mapping token ids to biases", value)
    out = {}
    for key, bias in value.items():
        try:
            token = int(key)
        except ValueError:
            raise APIError(
                f"Invalid key in 'logit_bias': {key!r} is not a token id.", param="logit_bias", code="invalid_value"
            ) from None
        if not 0 <= token < vocab:
            raise APIError(
                f"Invalid key in 'logit_bias': token id {token} is outside [0, {vocab}).",
                param="logit_bias",
                code="invalid_value",
            )
        out[token] = _number({"logit_bias": bias}, "logit_bias", 0.0, -100.0, 100.0)
    return out


def _response_format(body: dict):
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _type_error("response_format", "an object with a 'type'", value)
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise APIError(
                "'response_format.json_schema' must be an object with a 'schema' object.",
                param="response_format.json_schema",
                code="invalid_value",
            )
    elif kind != "json_object":
        raise APIError(
            f"Invalid value for 'response_format.type': {kind!r}; expected 'text', 'json_object' or 'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    try:
        return recognizer_for(value)
    except SchemaError as e:
        raise APIError(
            f"Unsupported JSON schema: {e}.", param="response_format.json_schema", code="unsupported_schema"
        ) from None


def _check_fields(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise APIError(
            f"Unrecognized request argument supplied: {unknown[0]}. This server does not support it.",
            param=unknown[0],
            code="unsupported_parameter",
        )
    if not isinstance(body.get("model"), str):
        raise APIError(
            "You must provide a model parameter (a string)."
            if "model" not in body
            else _type_error("model", "a string", body["model"]).message,
            param="model",
            code="missing_required_parameter" if "model" not in body else "invalid_type",
        )


def _options(body: dict, vocab: int, logprobs: int | None) -> SamplingOptions:
    return SamplingOptions(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_integer(body, "top_k", 0, 0),
        min_p=_number(body, "min_p", 0.0, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.0, 10.0, open_low=True),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        logit_bias=_logit_bias(body, vocab),
        seed=_integer(body, "seed", None, -(2**63), 2**64 - 1),
        logprobs=logprobs,
        recognizer=_response_format(body),
    )


def _common(body: dict, kind: str, vocab: int, logprobs: int | None, max_tokens: int | None) -> Request:
    stream = _bool(body, "stream")
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            raise APIError(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options", code="invalid_value"
            )
        if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
            raise _type_error("stream_options", "an object with 'include_usage'", stream_options)
        include_usage = _bool(stream_options, "include_usage")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _type_error("user", "a string", body["user"])
    return Request(
        kind,
        _options(body, vocab, logprobs),
        max_tokens,
        n=_integer(body, "n", 1, 1, MAX_N),
        stop=_stop(body),
        stream=stream,
        include_usage=include_usage,
        model=body["model"],
    )


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(
                    f"messages[{i}].content: only text parts ({{'type': 'text', 'text': ...}}) are supported.",
                    param=f"messages[{i}].content",
                    code="invalid_value",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise _type_error(f"messages[{i}].content", "a string or a list of text parts", content)


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if messages is None:
        raise APIError("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise APIError("'messages' must be a non-empty list of messages.", param="messages", code="invalid_value")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _type_error(f"messages[{i}]", "an object", message)
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise APIError(
                f"messages[{i}]: field {sorted(extra)[0]!r} is not supported.",
                param=f"messages[{i}].{sorted(extra)[0]}",
                code="unsupported_parameter",
            )
        role = message.get("role")
        if role not in ROLES:
            raise APIError(
                f"Invalid value for 'messages[{i}].role': {role!r}; expected one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        out.append({"role": "system" if role == "developer" else role, "content": _content(message, i)})
    return out


def parse_chat(body: dict, vocab: int) -> Request:
    """Validate a /v1/chat/completions body."""
    _check_fields(body, CHAT_FIELDS)
    messages = _messages(body)
    logprobs = _bool(body, "logprobs")
    top = _integer(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if top is not None and not logprobs:
        raise APIError("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs", code="invalid_value")
    max_tokens = _integer(body, "max_completion_tokens", None, 1)
    max_tokens = _integer(body, "max_tokens", max_tokens, 1)
    request = _common(body, "chat", vocab, (top or 0) if logprobs else None, max_tokens)
    request.messages = messages
    return request


def _prompt(body: dict, vocab: int) -> str | list[int]:
    prompt = body.get("prompt")
    if prompt is None:
        raise APIError("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one prompt
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        if not all(0 <= t < vocab for t in prompt):
            raise APIError(f"'prompt' holds a token id outside [0, {vocab}).", param="prompt", code="invalid_value")
        return prompt
    raise APIError(
        "'prompt' must be a string, a list of token ids, or a list holding one of those "
        "(several prompts per request are not supported).",
        param="prompt",
        code="invalid_value",
    )


def parse_completion(body: dict, vocab: int) -> Request:
    """Validate a /v1/completions body."""
    _check_fields(body, COMPLETION_FIELDS)
    prompt = _prompt(body, vocab)
    if _bool(body, "echo"):
        raise APIError("'echo' is not supported by this server.", param="echo", code="unsupported_parameter")
    if body.get("suffix") is not None:
        raise APIError("'suffix' is not supported by this server.", param="suffix", code="unsupported_parameter")
    n = _integer(body, "n", 1, 1, MAX_N)
    if _integer(body, "best_of", n, 1, MAX_N) != n:
        raise APIError("'best_of' other than 'n' is not supported.", param="best_of", code="unsupported_parameter")
    logprobs = _integer(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    request = _common(body, "completion", vocab, logprobs, _integer(body, "max_tokens", 16, 1))
    request.prompt = prompt
    return request
