"""The mask visualizer shows the model's real mask: checked against Transformers' create_causal_mask."""

from __future__ import annotations

import numpy as np
import torch
import transformers
from support.checkpoints import train_tokenizer
from transformers.masking_utils import create_causal_mask

from mlx_llama.mask_visualizer import ATTEND, MASKED, AttentionMaskVisualizer


def hf_allowed(mask: np.ndarray) -> np.ndarray:
    config = transformers.LlamaConfig(hidden_size=8, num_attention_heads=2, attn_implementation="eager")
    B, T = mask.shape
    out = create_causal_mask(
        config=config,
        input_embeds=torch.zeros(B, T, 8),
        attention_mask=torch.tensor(mask),
        cache_position=torch.arange(T),
        past_key_values=None,
    )
    return (out[:, 0] == 0).numpy()


def grid(text: str) -> np.ndarray:
    rows = [line.split(": ", 1)[1].split()[1:] for line in text.splitlines() if ATTEND in line or MASKED in line]
    return np.array([[cell == ATTEND for cell in row] for row in rows])


def test_grid_matches_transformers_causal_and_padded(tmp_path):
    train_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    vis = AttentionMaskVisualizer(tmp_path)
    text = vis.visualize_attention_mask("The cat sat on a mat", color=False)
    ids = vis.tokenizer("The cat sat on a mat")["input_ids"]
    assert np.array_equal(grid(text), np.tril(np.ones((len(ids), len(ids)), bool)))
    assert "'<s>'" in text.splitlines()[3] and "llama" in text
    vis.tokenizer.pad_token = "</s>"
    for side in ("left", "right"):
        vis.tokenizer.padding_side = side
        prompts = ["The cat sat on a mat", "A boat"]
        text = vis.visualize_attention_mask(prompts, color=False)
        mask = np.array(vis.tokenizer(prompts, padding=True)["attention_mask"])
        T = mask.shape[1]
        got = grid(text).reshape(2, T, T)
        assert np.array_equal(got, hf_allowed(mask))
    assert "\033[92m" in vis.visualize_attention_mask("The cat", color=True)
