"""Prompts from requests: chat messages through the tokenizer's chat template, completion prompts as given.

All chat rendering goes through `render_chat_prompt`, the one place that knows the tokenizer's chat API.
Checkpoints without a chat template use the tokenizer's plain "User: ...\\nAssistant:" format; the model
would go on to write the next "User:" turn, so that becomes a stop string, as in `mlx-llama chat`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jinja2

from ..errors import MlxLlamaError
from .protocol import APIError

PLAIN_CHAT_STOPS = ["\nUser:"]


def encode_text(tokenizer, text: str) -> list[int]:
    """Ids of a prompt string, BOS added unless the text already starts with it (as `generate` does)."""
    bos = getattr(tokenizer, "bos_token", None)
    has_bos = bool(bos) and text.startswith(bos)
    return list(tokenizer.encode(text, add_special_tokens=not has_bos))


def render_chat_prompt(tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[str]]:
    """(prompt ids, extra stop strings) for a conversation, with the generation prompt appended."""
    try:  # ids as Transformers makes them: a template writes its own special tokens, the plain format gets a bos
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    except (MlxLlamaError, ValueError, jinja2.TemplateError) as e:  # e.g. roles the template does not allow
        raise APIError(
            f"messages cannot be rendered with the model's chat template: {e}", param="messages", code="invalid_value"
        ) from None
    stops = [] if getattr(tokenizer, "has_chat_template", False) else PLAIN_CHAT_STOPS
    return [int(i) for i in ids], stops


def completion_prompt(tokenizer, prompt: str | list[int]) -> list[int]:
    return encode_text(tokenizer, prompt) if isinstance(prompt, str) else list(prompt)
