"""Speculative and prompt-lookup decoding: greedy identity with Transformers' greedy generate, and the
accept/reject rule keeping the target's sampling distribution (chi-square against the exact probabilities)."""

import warnings

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")

from support.hf_llama import hf_tiny_model  # noqa: E402

from mlx_llama.errors import ConfigError  # noqa: E402
from mlx_llama.generation.api import stream_generate  # noqa: E402
from mlx_llama.generation.sampling import SamplingParams, TokenChooser  # noqa: E402
from mlx_llama.generation.speculative import (  # noqa: E402
    PromptLookupProposer,
    SpeculativeStats,
    _accept_sampled,
    speculative_steps,
)
from mlx_llama.modeling.heads import LlamaForCausalLM  # noqa: E402
from mlx_llama.tokenizer import LlamaTokenizer  # noqa: E402

PROMPT = [1, 5, 6, 7, 8, 9, 30, 5, 6, 7]
NEW = 40


@pytest.fixture(scope="module")
def models(tiny_checkpoint, tmp_path_factory):
    (target_dir, hf), draft_dir = tiny_checkpoint, tmp_path_factory.mktemp("draft")
    hf_tiny_model(hf.config.vocab_size, seed=1, num_hidden_layers=1).save_pretrained(draft_dir)
    target = LlamaForCausalLM.from_pretrained(target_dir, dtype="float32")
    draft = LlamaForCausalLM.from_pretrained(draft_dir, dtype="float32")
    return hf_greedy(hf, PROMPT), target, draft, LlamaTokenizer.from_pretrained(target_dir)


def hf_greedy(hf, ids, n=NEW):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.tensor([ids])
        out = hf.generate(
            t, attention_mask=torch.ones_like(t), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return out[0].tolist()


@pytest.mark.parametrize("how", ["random 1-layer draft", "target as its own draft", "prompt lookup"])
def test_greedy_identity_with_transformers(models, how):
    expected, target, draft, _ = models
    kwargs = {
        "random 1-layer draft": {"assistant_model": draft, "num_assistant_tokens": 4},
        "target as its own draft": {"assistant_model": target, "num_assistant_tokens": 3},
        "prompt lookup": {"prompt_lookup_num_tokens": 4},
    }[how]
    got = np.array(target.generate(mx.array([PROMPT]), max_new_tokens=NEW, eos_token_id=[], **kwargs))
    assert got[0].tolist() == expected


def test_acceptance_counts(models):
    _, target, draft, _ = models
    chooser = TokenChooser(SamplingParams())
    runs = {}
    for name, kw in {
        "self": {"draft_model": target},
        "lookup": {"prompt_lookup": 4},
        "random": {"draft_model": draft},
    }.items():
        counts = SpeculativeStats()
        steps = list(
            speculative_steps(target, target.make_cache(), PROMPT, chooser, NEW, num_draft_tokens=4, stats=counts, **kw)
        )
        assert len(steps) == NEW
        assert sum(s.from_draft[0] for s in steps) == counts.accepted
        runs[name] = counts
    assert runs["self"].acceptance_rate == 1.0  # the target drafting for itself is always right
    assert runs["self"].rounds == NEW // 5  # 4 drafts + 1 bonus token per round
    assert runs["lookup"].accepted > 0  # the tiny model's greedy text repeats itself: copies get accepted
    assert runs["random"].acceptance_rate < 1.0


def test_stream_generate_with_a_draft_equals_transformers(models):
    expected, target, draft, tok = models
    texts = {}
    for name, kw in {
        "draft": {"draft_model": draft, "num_draft_tokens": 2},
        "lookup": {"prompt_lookup": 3},
        "plain": {},
    }.items():
        out = list(stream_generate(target, tok, PROMPT, 25, eos_token_id=[], **kw))
        assert [r.token for r in out] == expected[len(PROMPT) : len(PROMPT) + 25]
        texts[name] = "".join(r.text for r in out)
    assert texts["draft"] == texts["plain"] == texts["lookup"]


def test_prompt_lookup_proposes_what_followed_the_last_match():
    lookup = PromptLookupProposer(max_ngram=3)
    seq = [1, 7, 8, 9, 4, 7, 8, 9, 5, 6, 3, 8, 9]  # trailing 2-gram (8, 9) last occurs before (5, 6, 3)
    assert np.array(lookup.propose(seq, 3, None)[0]).tolist() == [5, 6, 3]
    assert np.array(lookup.propose([1, 2, 3], 3, None)[0]).tolist() == []


def chi_square_p(samples, probs):
    observed = np.bincount(samples, minlength=len(probs))
    keep = probs > 0
    assert observed[~keep].sum() == 0, "a token of probability 0 was produced"
    expected = probs[keep] * len(samples)
    return stats.chisquare(observed[keep], expected).pvalue


def test_accept_reject_rule_keeps_the_target_distribution():
    rng = np.random.default_rng(0)
    vocab = 6
    p = rng.dirichlet(np.ones(vocab), size=3)  # target rows for 2 drafts + the bonus position
    q = rng.dirichlet(np.ones(vocab) * 0.5, size=2)  # a draft quite unlike the target
    n = 8000
    first = [], []
    for _ in range(n):
        drafts = np.array([rng.choice(vocab, p=q[0]), rng.choice(vocab, p=q[1])])
        first[0].append(_accept_sampled(p, drafts, q, rng)[0])
        lookup = np.array([rng.integers(vocab), 0])  # a deterministic (one-hot) draft, as prompt lookup gives
        first[1].append(_accept_sampled(p, lookup, None, rng)[0])
    assert chi_square_p(np.array(first[0]), p[0]) > 1e-3
    assert chi_square_p(np.array(first[1]), p[0]) > 1e-3
    # And the test can fail: the draft's own distribution is rejected.
    assert chi_square_p(np.array([rng.choice(vocab, p=q[0]) for _ in range(n)]), p[0]) < 1e-6


def test_sampled_speculative_tokens_follow_the_target(tmp_path):
    """End to end on a 12-token vocabulary: first and second new token against Transformers' probabilities."""
    vocab, prompt, runs = 12, [1, 4, 7], 400
    hf = hf_tiny_model(vocab, seed=3, num_hidden_layers=1, hidden_size=32, intermediate_size=48)
    with torch.no_grad():
        hf.lm_head.weight.mul_(0.15)  # undo most of the helper's sharpening: a spread-out distribution
    hf.save_pretrained(tmp_path / "t")
    hf_tiny_model(vocab, seed=4, num_hidden_layers=1, hidden_size=32, intermediate_size=48).save_pretrained(
        tmp_path / "d"
    )
    target = LlamaForCausalLM.from_pretrained(tmp_path / "t", dtype="float32")
    draft = LlamaForCausalLM.from_pretrained(tmp_path / "d", dtype="float32")
    with torch.no_grad():
        p1 = torch.softmax(hf(torch.tensor([prompt])).logits[0, -1].double(), -1).numpy()
        nxt = torch.tensor([prompt + [t] for t in range(vocab)])
        p2 = p1 @ torch.softmax(hf(nxt).logits[:, -1].double(), -1).numpy()
    params = SamplingParams(do_sample=True, top_k=None)
    firsts, seconds = [], []
    for seed in range(runs):
        steps = speculative_steps(
            target,
            target.make_cache(),
            prompt,
            TokenChooser(params, seed),
            2,
            draft_model=draft,
            num_draft_tokens=2,
            seed=seed,
        )
        tokens = [s.tokens[0] for s in steps]
        firsts.append(tokens[0])
        seconds.append(tokens[1])
    assert chi_square_p(np.array(firsts), p1) > 1e-3
    assert chi_square_p(np.array(seconds), p2) > 1e-3


def test_bad_speculative_inputs(models, tmp_path):
    _, target, draft, _ = models
    with pytest.raises(ConfigError, match="batch size 1"):
        target.generate(mx.array([PROMPT, PROMPT]), max_new_tokens=3, assistant_model=draft)
    hf_tiny_model(50, seed=2, num_hidden_layers=1).save_pretrained(tmp_path / "other")
    other = LlamaForCausalLM.from_pretrained(tmp_path / "other", dtype="float32")
    with pytest.raises(ConfigError, match="vocab_size is 50"):
        target.generate(mx.array([PROMPT]), max_new_tokens=3, assistant_model=other)
    with pytest.raises(ConfigError, match="not both"):
        list(
            speculative_steps(
                target,
                target.make_cache(),
                PROMPT,
                TokenChooser(SamplingParams()),
                3,
                draft_model=draft,
                prompt_lookup=2,
            )
        )
