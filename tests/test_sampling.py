"""Logits processors against Transformers' own LogitsProcessors on random logits, and seeded sampling."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_llama.errors import ConfigError
from mlx_llama.generation.sampling import (
    SamplingParams,
    TokenChooser,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    mark_seen,
    seen_mask,
)

torch = pytest.importorskip("torch")
lp = pytest.importorskip("transformers.generation.logits_process")

VOCAB = 503


def random_logits(seed: int, batch: int = 4, vocab: int = VOCAB, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((batch, vocab)) * scale).astype(np.float32)


def hf(processor, logits: np.ndarray, input_ids: np.ndarray | None = None) -> np.ndarray:
    ids = torch.zeros((logits.shape[0], 1), dtype=torch.long) if input_ids is None else torch.tensor(input_ids)
    return processor(ids, torch.tensor(logits)).numpy()


def ours(fn, logits: np.ndarray, *args) -> np.ndarray:
    return np.array(fn(mx.array(logits), *args))


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert np.array_equal(np.isneginf(a), np.isneginf(b)), "different tokens were filtered out"
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.8])
def test_temperature_matches_transformers(seed, temperature):
    x = random_logits(seed)
    assert_same(ours(apply_temperature, x, temperature), hf(lp.TemperatureLogitsWarper(temperature), x))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("top_k,keep", [(1, 1), (5, 1), (50, 1), (2, 7), (VOCAB + 10, 1)])
def test_top_k_matches_transformers(seed, top_k, keep):
    x = random_logits(seed)
    expected = hf(lp.TopKLogitsWarper(top_k, min_tokens_to_keep=keep), x)
    assert_same(ours(apply_top_k, x, top_k, keep), expected)


def test_top_k_keeps_ties_at_threshold():
    x = np.array([[1.0, 3.0, 2.0, 2.0, 0.5]], dtype=np.float32)
    out = ours(apply_top_k, x, 2)
    assert_same(out, hf(lp.TopKLogitsWarper(2), x))
    assert np.isfinite(out).sum() == 3


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("top_p,keep", [(0.1, 1), (0.5, 1), (0.9, 1), (0.99, 1), (0.3, 5), (0.0, 1)])
def test_top_p_matches_transformers(seed, top_p, keep):
    x = random_logits(seed)
    expected = hf(lp.TopPLogitsWarper(top_p, min_tokens_to_keep=keep), x)
    assert_same(ours(apply_top_p, x, top_p, keep), expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_p,keep", [(0.01, 1), (0.1, 1), (0.5, 1), (1.0, 1), (0.9, 4)])
def test_min_p_matches_transformers(seed, min_p, keep):
    x = random_logits(seed)
    expected = hf(lp.MinPLogitsWarper(min_p, min_tokens_to_keep=keep), x)
    assert_same(ours(apply_min_p, x, min_p, keep), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(seed, penalty):
    rng = np.random.default_rng(100 + seed)
    x = random_logits(seed)
    # Repeated ids in a row must be penalized once, as Transformers' gather/scatter does.
    ids = rng.integers(0, 40, size=(x.shape[0], 30))
    seen = seen_mask(mx.array(ids), VOCAB)
    expected = hf(lp.RepetitionPenaltyLogitsProcessor(penalty), x, ids)
    assert_same(ours(apply_repetition_penalty, x, seen, penalty), expected)


def test_seen_mask_grows_with_marked_tokens():
    seen = seen_mask(mx.array([[3, 3, 1], [0, 2, 2]]), 6)
    seen = mark_seen(seen, mx.array([5, 2]))
    expected = np.array([[0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 0, 0]], dtype=bool)
    assert np.array_equal(np.array(seen), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "temperature,top_k,top_p,min_p,penalty",
    [
        (0.7, 50, 0.9, None, 1.2),
        (1.5, 20, 0.8, 0.05, 1.0),
        (1.0, None, 0.95, 0.1, 1.1),
        (0.5, 0, 1.0, None, 1.0),
    ],
)
def test_full_chain_matches_transformers_order(seed, temperature, top_k, top_p, min_p, penalty):
    rng = np.random.default_rng(seed)
    x = random_logits(seed)
    ids = rng.integers(0, VOCAB, size=(x.shape[0], 12))
    chain = lp.LogitsProcessorList()
    if penalty != 1.0:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(penalty))
    if temperature != 1.0:
        chain.append(lp.TemperatureLogitsWarper(temperature))
    if top_k:
        chain.append(lp.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(lp.TopPLogitsWarper(top_p))
    if min_p is not None:
        chain.append(lp.MinPLogitsWarper(min_p))
    expected = chain(torch.tensor(ids), torch.tensor(x)).numpy()
    params = SamplingParams(
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=penalty,
    )
    got = np.array(TokenChooser(params).process(mx.array(x), seen_mask(mx.array(ids), VOCAB)))
    assert_same(got, expected)


def test_greedy_is_argmax_after_penalty():
    x = np.array([[0.0, 5.0, 4.0, -1.0]], dtype=np.float32)
    chooser = TokenChooser(SamplingParams(do_sample=False, repetition_penalty=2.0))
    assert chooser(mx.array(x)).tolist() == [1]
    # 5.0 / 2 = 2.5 < 4.0 once token 1 has been seen.
    assert chooser(mx.array(x), seen_mask(mx.array([[1]]), 4)).tolist() == [2]


def draw(seed, steps=40, **kw):
    chooser = TokenChooser(SamplingParams(do_sample=True, **kw), seed=seed)
    logits = mx.array(random_logits(7, batch=3, scale=1.0))
    return [chooser(logits).tolist() for _ in range(steps)]


def test_seeded_sampling_repeats_exactly():
    first = draw(1234, temperature=0.9, top_k=0)
    mx.random.seed(999)  # the global random state must not matter
    mx.random.uniform(shape=(5,))
    assert draw(1234, temperature=0.9, top_k=0) == first
    assert draw(1235, temperature=0.9, top_k=0) != first


def test_sampled_tokens_respect_filters():
    x = random_logits(3, batch=2)
    allowed = np.isfinite(hf(lp.TopKLogitsWarper(5), x))
    chooser = TokenChooser(SamplingParams(do_sample=True, top_k=5), seed=0)
    for _ in range(50):
        tokens = chooser(mx.array(x)).tolist()
        assert all(allowed[row, t] for row, t in enumerate(tokens))


def test_sampling_follows_softmax_distribution():
    # 20000 draws from a 4-way softmax: frequencies within 4 standard errors of the probabilities.
    logits = np.array([[2.0, 1.0, 0.0, -1.0]], dtype=np.float32)
    temperature = 0.8
    chooser = TokenChooser(SamplingParams(do_sample=True, temperature=temperature, top_k=0), seed=42)
    n = 20000
    tokens = np.array(chooser.choose(mx.broadcast_to(mx.array(logits / temperature), (n, 4))))
    freq = np.bincount(tokens, minlength=4) / n
    p = np.exp(logits[0] / temperature) / np.exp(logits[0] / temperature).sum()
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n))


@pytest.mark.parametrize(
    "kw",
    [
        {"do_sample": True, "temperature": 0.0},
        {"top_k": -1},
        {"top_p": 1.5},
        {"min_p": -0.1},
        {"repetition_penalty": 0.0},
        {"min_tokens_to_keep": 0},
    ],
)
def test_bad_parameters_raise_config_error(kw):
    with pytest.raises(ConfigError):
        SamplingParams(**kw)


def test_cli_style_parameters():
    greedy = SamplingParams.from_temperature(0.0, top_k=40)
    assert not greedy.do_sample and greedy.warpers() == []
    sampled = SamplingParams.from_temperature(0.7, top_k=0, top_p=0.9, min_p=0.0)
    assert sampled.do_sample and sampled.top_k is None and sampled.min_p is None
    assert len(sampled.warpers()) == 2
