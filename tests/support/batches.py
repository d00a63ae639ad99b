"""Left-padded prompt batches: what every batched-generation test feeds to both implementations."""

from __future__ import annotations

import numpy as np

PAD = 0
# A left-padded batch of 3 prompts of lengths 4, 7 and 2.
PROMPTS = [[1, 100, 63, 64], [1, 5, 6, 7, 8, 9, 30], [1, 100]]


def left_padded(prompts: list[list[int]] = PROMPTS, pad: int = PAD) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask) int64 arrays, each prompt right-aligned after `pad` ids."""
    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = p
        mask[row, width - len(p) :] = 1
    return ids, mask
