"""Chat templates: the checkpoint's Jinja template rendered in a sandbox, as Transformers' `apply_chat_template`
renders it, and the documented plain format for checkpoints without one.

The template sees `messages`, `tools`, `documents`, `add_generation_prompt`, the special tokens (`bos_token`,
`eos_token`, ...) and any extra keyword; it may call `raise_exception(msg)` and `strftime_now(fmt)` and use
the `tojson` filter (non-ASCII kept, as Transformers' own filter).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import TokenizerError

PLAIN = "plain"
CONTINUE_ERROR = (
    "continue_final_message is set but the final message does not appear in the chat after applying the chat "
    "template (the template removes part of it)"
)


class ChatTemplateError(TokenizerError):
    """The template failed: its own `raise_exception` message, or a Jinja syntax or runtime error."""


def _raise_exception(message: str):
    raise ChatTemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@functools.lru_cache(maxsize=32)
def compile_template(source: str):
    """A Jinja template in an immutable sandbox with Transformers' environment settings."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"the chat template is not valid Jinja (line {exc.lineno}): {exc.message}") from None


def select_template(templates: str | dict[str, str] | None, chat_template: str | None, tools: Any) -> str | None:
    """The template to use: a name of a named template or template text; else the default (or "tool_use")."""
    if isinstance(templates, dict):
        if chat_template is not None and chat_template in templates:
            return templates[chat_template]
        if chat_template is not None:
            return chat_template
        if tools is not None and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise TokenizerError(
            f"this tokenizer has named chat templates {sorted(templates)} and none is 'default': pass "
            "chat_template=<name>"
        )
    return chat_template if chat_template is not None else templates


def has_chat_template(tok) -> bool:
    return tok.chat_template is not None


def special_tokens_map(tok) -> dict[str, Any]:
    """bos_token, eos_token, unk_token, pad_token (those set) and additional_special_tokens, as strings."""
    out: dict[str, Any] = {}
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = getattr(tok, attr)
        if value is not None:
            out[attr] = value
    if tok.additional_special_tokens:
        out["additional_special_tokens"] = list(tok.additional_special_tokens)
    return out


def _final_text(chat: Sequence[dict[str, Any]]) -> str:
    content = chat[-1].get("content") if chat and isinstance(chat[-1], dict) else None
    if isinstance(content, (list, tuple)):
        content = next((block["text"] for block in reversed(content) if "text" in block), None)
    if not isinstance(content, str):
        raise TokenizerError("continue_final_message is set but the final message has no text to continue")
    return content


def _cut_after_final(rendered: str, final: str) -> str:
    """Drop what the template writes after the final message (its end-of-turn tokens)."""
    if final.strip() not in rendered:
        raise TokenizerError(CONTINUE_ERROR)
    at = rendered.rindex(final.strip())
    if rendered[at : at + len(final.lstrip())] == final:
        return rendered[: at + len(final.lstrip())]
    return rendered[: at + len(final.strip())]


def render_jinja(template: str, chat: Sequence[dict[str, Any]], continue_final_message: bool, **context: Any) -> str:
    """One conversation through the template (continue_final_message: the text ends inside the last message)."""
    import jinja2

    compiled = compile_template(template)
    try:
        rendered = compiled.render(messages=chat, **context)
    except ChatTemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed: {exc}") from None
    return _cut_after_final(rendered, _final_text(chat)) if continue_final_message else rendered


def _check_plain(messages: Sequence[dict[str, Any]]) -> None:
    if not isinstance(messages, (list, tuple)):
        raise TokenizerError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {messages!r}")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise TokenizerError(f"messages[{i}] must be a dict with str 'role' and 'content', got {message!r}")


def render_plain(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """The documented format for checkpoints without a chat template (base models): one line per message,
    `"<Role>: <content stripped>\\n"` with the role capitalised ("System", "User", "Assistant"), and, with
    `add_generation_prompt`, a final `"Assistant:"` for the model to continue. No special tokens in the text.
    """
    _check_plain(messages)
    text = "".join(f"{m['role'].capitalize()}: {m['content'].strip()}\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


def _render_all(tok, chats, template, tools, documents, add_generation_prompt, continue_final_message, kwargs):
    if template is None:
        if continue_final_message:
            raise TokenizerError("continue_final_message needs a chat template (this tokenizer has none)")
        return [render_plain(chat, add_generation_prompt) for chat in chats]
    if tools is not None and not all(isinstance(t, dict) for t in tools):
        raise TokenizerError("tools must be JSON-schema dicts ({'type': 'function', 'function': {...}})")
    context = {**special_tokens_map(tok), **kwargs}
    return [
        render_jinja(
            template,
            chat,
            continue_final_message,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            **context,
        )
        for chat in chats
    ]


def apply_chat_template(
    tok,
    conversation: Sequence[dict[str, Any]] | Sequence[Sequence[dict[str, Any]]],
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    chat_template: str | None = None,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    tokenize: bool = True,
    padding: bool | str = False,
    truncation: bool = False,
    max_length: int | None = None,
    return_tensors: str | None = None,
    return_dict: bool = False,
    tokenizer_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
):
    """Transformers' `apply_chat_template`: text (tokenize=False), ids, or a BatchEncoding (return_dict=True).

    A batch of conversations gives a list. As in Transformers, the rendered text is tokenized without adding
    special tokens (the template writes them); the plain format has none, so it gets the bos.
    """
    if continue_final_message and add_generation_prompt:
        raise TokenizerError("continue_final_message and add_generation_prompt cannot both be set")
    if kwargs.pop("return_assistant_tokens_mask", False):
        raise TokenizerError("return_assistant_tokens_mask is not supported (it needs {% generation %} blocks)")
    batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
    chats = list(conversation) if batched else [conversation]
    template = select_template(tok.chat_template, chat_template, tools)
    texts = _render_all(tok, chats, template, tools, documents, add_generation_prompt, continue_final_message, kwargs)
    if not tokenize:
        return texts if batched else texts[0]
    out = tok(
        texts if batched else texts[0],
        add_special_tokens=template is None,
        padding=padding,
        truncation=truncation,
        max_length=max_length,
        return_tensors=return_tensors,
        **(tokenizer_kwargs or {}),
    )
    return out if return_dict else out["input_ids"]
