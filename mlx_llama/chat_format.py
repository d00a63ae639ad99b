"""Chat formats rendered natively, without Jinja: the Llama 2 chat template and a plain format for base models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlx_llama.errors import TokenizerError

if TYPE_CHECKING:
    from mlx_llama.tokenizer import LlamaTokenizer

LLAMA2_ROLE_ERROR = "Conversation roles must alternate user/assistant/user/assistant/..."


def chat_format_of(chat_template: str | None) -> str:
    """Recognise the chat template without Jinja: the Llama 2 template is the one mentioning [INST] and <<SYS>>."""
    if chat_template is None:
        return "plain"
    if "[INST]" in chat_template and "<<SYS>>" in chat_template:
        return "llama-2"
    raise TokenizerError(
        "the chat_template in tokenizer_config.json is not the Llama 2 chat template and mlx_llama renders chat "
        "formats natively (no Jinja); remove chat_template to use the plain format, or render the prompt yourself"
    )


def _check_messages(messages: Sequence[dict[str, str]]) -> None:
    if not isinstance(messages, (list, tuple)):
        raise TokenizerError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {messages!r}")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise TokenizerError(f"messages[{i}] must be a dict with str 'role' and 'content', got {message!r}")


def render_llama2(messages: Sequence[dict[str, str]], bos: str, eos: str) -> str:
    """The Llama 2 chat format, character for character what Transformers renders from the Llama-2-*-chat
    template: a leading system message is folded into the first user turn as "<<SYS>>\\n...\\n<</SYS>>\\n\\n";
    a user turn is `bos + "[INST] " + content.strip() + " [/INST]"`, an assistant turn
    `" " + content.strip() + " " + eos`. Roles must alternate starting with user (other roles at the
    assistant positions render nothing, as in the template). There is no separate generation prompt: the
    text already ends with " [/INST]" after a user turn.
    """
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    parts = []
    for index, message in enumerate(messages):
        if (message["role"] == "user") != (index % 2 == 0):
            raise TokenizerError(LLAMA2_ROLE_ERROR)
        content = message["content"]
        if index == 0 and system is not None:
            content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
        if message["role"] == "user":
            parts.append(bos + "[INST] " + content.strip() + " [/INST]")
        elif message["role"] == "assistant":
            parts.append(" " + content.strip() + " " + eos)
    return "".join(parts)


def render_plain(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """The documented format for checkpoints without a chat template (base models): one line per message,
    `"<Role>: <content stripped>\\n"` with the role capitalised ("System", "User", "Assistant"), and, with
    `add_generation_prompt`, a final `"Assistant:"` for the model to continue. No special tokens in the text.
    """
    text = "".join(f"{m['role'].capitalize()}: {m['content'].strip()}\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


def render_chat(tok: LlamaTokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool):
    """Return (text, add_special_tokens to use when tokenising it) for the tokenizer's chat format."""
    _check_messages(messages)
    if tok.chat_format == "llama-2":
        return render_llama2(messages, tok.bos_token or "", tok.eos_token or ""), False
    return render_plain(messages, add_generation_prompt), True
