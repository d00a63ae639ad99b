"""The prompt cache: keys/values of finished requests in an LRU bounded in bytes.

A new request re-uses the entry sharing the longest prefix with its prompt, so only the rest is prefilled.
An entry whose tokens are a prefix of a newer one is dropped when the newer one is stored (a conversation
keeps one entry, its latest turn). The bound counts the key/value bytes; an entry larger than it is not kept.
Only the scheduler thread touches it, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass
class Entry:
    tokens: np.ndarray  # the ids whose keys/values are stored, in order
    kv: list[tuple[mx.array, mx.array]]  # per layer, [1, n_kv, len(tokens), D]
    nbytes: int


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PromptCache:
    """LRU of Entry by bytes; `lookup` finds the longest shared prefix, `insert` stores a finished row."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[int, Entry] = OrderedDict()
        self.nbytes = 0
        self._next_key = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, prompt: list[int]) -> tuple[int, list[tuple[mx.array, mx.array]] | None]:
        """(shared prefix length, the stored kv it can be cut from); (0, None) on a miss."""
        ids = np.asarray(prompt, dtype=np.int64)
        best_key, best = None, 0
        for key, entry in self.entries.items():
            n = common_prefix(entry.tokens, ids)
            if n > best:
                best_key, best = key, n
        if best_key is None:
            return 0, None
        self.entries.move_to_end(best_key)
        self.hits += 1
        return best, self.entries[best_key].kv

    def insert(self, tokens: list[int], kv: list[tuple[mx.array, mx.array]]) -> None:
        if self.max_bytes <= 0 or not tokens:
            return
        kv = [(mx.contiguous(k), mx.contiguous(v)) for k, v in kv]  # own copies, not views of the batch
        nbytes = sum(k.nbytes + v.nbytes for k, v in kv)
        if nbytes > self.max_bytes:
            return
        ids = np.asarray(tokens, dtype=np.int64)
        for key in [k for k, e in self.entries.items() if common_prefix(e.tokens, ids) == len(e.tokens)]:
            self._drop(key)
        mx.eval([a for pair in kv for a in pair])
        self.entries[self._next_key] = Entry(ids, kv, nbytes)
        self._next_key += 1
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: int) -> None:
        self.nbytes -= self.entries.pop(key).nbytes
