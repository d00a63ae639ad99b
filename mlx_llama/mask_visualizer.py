"""Print which tokens each token may attend to, as Transformers' AttentionMaskVisualizer does on the Llama page:

    from mlx_llama.mask_visualizer import AttentionMaskVisualizer
    AttentionMaskVisualizer("path/to/model")("Plants create energy through a process known as")

The grid comes from the model's own mask code (the causal mask, plus padding for a padded batch), so
it shows what the attention really uses: ■ attended, ⬚ masked, the diagonal in green on a terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import mlx.core as mx
import numpy as np

GREEN, RESET = "\033[92m", "\033[0m"
ATTEND, MASKED = "■", "⬚"


def allowed_matrix(attention_mask: Any | None, length: int) -> np.ndarray:
    """[rows, length, length] booleans: query t may attend to key s (model's causal + padding rules)."""
    from .modeling.llama import causal_mask, padding_causal_mask

    if attention_mask is None or np.asarray(attention_mask).all():
        return np.array(causal_mask(length, 0))[None]
    mask = padding_causal_mask(mx.array(np.asarray(attention_mask)), length, 0)
    return np.array(mask[:, 0] == 0)


def render(tokens: list[str], allowed: np.ndarray, color: bool = False) -> str:
    """One line per token: its text, its index, then a square per key."""
    width = max(len(repr(t)) for t in tokens)
    lines = []
    for i, token in enumerate(tokens):
        cells = []
        for j in range(len(tokens)):
            cell = ATTEND if allowed[i, j] else MASKED
            cells.append(f"{GREEN}{cell}{RESET}" if color and i == j and allowed[i, j] else cell)
        lines.append(f"{repr(token).ljust(width)}: {str(i).rjust(2)} {' '.join(cells)}")
    return "\n".join(lines)


class AttentionMaskVisualizer:
    """Built from a model directory (its tokenizer and config) or from a tokenizer directly."""

    def __init__(self, model_name_or_path: str | os.PathLike | None = None, tokenizer: Any = None) -> None:
        if tokenizer is None:
            from .auto import AutoConfig, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            self.model_type = AutoConfig.from_pretrained(model_name_or_path).model_type
        else:
            self.model_type = "llama"
        self.tokenizer, self.name = tokenizer, str(model_name_or_path or "")

    def visualize_attention_mask(self, text: str | list[str], color: bool | None = None) -> str:
        """The grid(s) as text; a list of texts is padded as the tokenizer pads (its `padding_side`)."""
        color = sys.stdout.isatty() if color is None else color
        batch = [text] if isinstance(text, str) else list(text)
        encoded = self.tokenizer(batch, padding=len(batch) > 1)
        ids, mask = encoded["input_ids"], np.array(encoded["attention_mask"])
        allowed = allowed_matrix(mask, len(ids[0]))
        title = f"Attention visualization for {self.model_type}:{self.name}"
        border = "#" * (len(title) + 8)
        blocks = [border, f"##  {title}  ##", border]
        for row, row_ids in enumerate(ids):
            tokens = self.tokenizer.convert_ids_to_tokens(list(row_ids))
            blocks.append(render(tokens, allowed[min(row, len(allowed) - 1)], color))
            blocks.append(border)
        return "\n".join(blocks)

    def __call__(self, text: str | list[str], color: bool | None = None) -> None:
        print(self.visualize_attention_mask(text, color))
