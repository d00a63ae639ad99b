"""The prompt cache's LRU: bounded in bytes, longest-prefix lookup, prefix entries replaced by longer ones."""

from __future__ import annotations

import mlx.core as mx

from mlx_llama.server.prompt_cache import PromptCache


def kv(n: int, layers: int = 2) -> list[tuple[mx.array, mx.array]]:
    """Per layer [1, 2 heads, n, 4] float32 keys and values: 2 * 2 * n * 4 * 4 bytes = 64n per layer."""
    return [(mx.full((1, 2, n, 4), float(i)), mx.full((1, 2, n, 4), -float(i))) for i in range(layers)]


def test_lookup_finds_the_longest_shared_prefix():
    cache = PromptCache(10**6)
    cache.insert([1, 2, 3, 4], kv(4))
    cache.insert([1, 9, 9], kv(3))
    assert cache.lookup([1, 2, 3, 7, 7])[0] == 3
    assert cache.lookup([1, 9, 9, 9])[0] == 3
    assert cache.lookup([5, 6]) == (0, None)
    shared, stored = cache.lookup([1, 2, 3, 4, 5])
    assert shared == 4 and stored[1][0].shape == (1, 2, 4, 4) and stored[1][0][0, 0, 0, 0].item() == 1.0


def test_bytes_stay_under_the_bound_evicting_the_least_recently_used():
    per_token = 2 * 64  # two layers
    cache = PromptCache(per_token * 25)
    cache.insert([1] * 10, kv(10))
    cache.insert([2] * 10, kv(10))
    assert cache.nbytes == per_token * 20
    cache.lookup([1] * 10)  # touch the first: the second is now the oldest
    cache.insert([3] * 10, kv(10))
    assert cache.nbytes == per_token * 20 <= cache.max_bytes
    assert cache.lookup([2] * 10)[0] == 0 and cache.lookup([1] * 10)[0] == 10 and cache.lookup([3] * 10)[0] == 10
    cache.insert([4] * 30, kv(30))  # larger than the whole bound: not kept
    assert cache.lookup([4] * 30)[0] == 0 and cache.nbytes == per_token * 20


def test_a_longer_turn_replaces_its_prefix_and_zero_disables():
    cache = PromptCache(10**6)
    cache.insert([1, 2, 3], kv(3))
    cache.insert([1, 2, 3, 4, 5], kv(5))
    assert len(cache) == 1 and cache.nbytes == 5 * 2 * 64
    off = PromptCache(0)
    off.insert([1, 2], kv(2))
    assert len(off) == 0 and off.lookup([1, 2]) == (0, None)
