"""Generation against Transformers' `generate` (the oracle) and sentencepiece's own decode."""

import warnings

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.batches import PAD, PROMPTS, left_padded  # noqa: E402

from mlx_llama.errors import ConfigError  # noqa: E402
from mlx_llama.generation.api import _StopStrings, generate, model_generate, stream_generate  # noqa: E402
from mlx_llama.modeling.heads import LlamaForCausalLM  # noqa: E402
from mlx_llama.tokenizer import LlamaTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    path, hf = tiny_checkpoint
    return path, hf, LlamaForCausalLM.from_pretrained(path, dtype="float32")


def hf_generate(hf, ids, mask, **kw):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)
    return out.numpy()


def ours(model, ids, mask, **kw):
    return np.array(model_generate(model, mx.array(ids), attention_mask=mx.array(mask), **kw))


def test_greedy_matches_transformers_left_padded_batch(checkpoint):
    _, hf, model = checkpoint
    ids, mask = left_padded()
    # Pick as eos a token row 0 emits mid-way, so some rows finish early and must be padded after it.
    free_run = ours(model, ids, mask, max_new_tokens=10, eos_token_id=[], pad_token_id=PAD)
    eos = int(free_run[0, ids.shape[1] + 8])
    expected = hf_generate(hf, ids, mask, max_new_tokens=32, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
    got = ours(model, ids, mask, max_new_tokens=32, eos_token_id=eos, pad_token_id=PAD)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    finished = expected[0, ids.shape[1] :].tolist()
    assert eos in finished and finished[finished.index(eos) + 1 :] == [PAD] * (len(finished) - finished.index(eos) - 1)


def test_greedy_with_repetition_penalty_and_small_prefill_chunks(checkpoint):
    _, hf, model = checkpoint
    ids, mask = left_padded()
    kw = dict(max_new_tokens=24, do_sample=False, repetition_penalty=1.5, pad_token_id=PAD, eos_token_id=2)
    expected = hf_generate(hf, ids, mask, **kw)
    got = ours(model, ids, mask, prefill_step_size=2, **kw)
    np.testing.assert_array_equal(got, expected)


def test_default_length_and_inferred_mask_match_transformers(checkpoint):
    _, hf, model = checkpoint
    ids, _ = left_padded()
    # No mask and no lengths: the mask comes from the pad id, and 20 new tokens are generated.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf.generate(torch.tensor(ids), pad_token_id=PAD, eos_token_id=None).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = np.array(model.generate(ids, pad_token_id=PAD, eos_token_id=[]))
    assert got.shape == (3, ids.shape[1] + 20)
    np.testing.assert_array_equal(got, expected)


def test_max_length_counts_the_prompt(checkpoint):
    _, hf, model = checkpoint
    ids = np.array([PROMPTS[1]])
    got = np.array(model.generate(ids, max_length=10, eos_token_id=[]))
    assert got.shape == (1, 10)
    np.testing.assert_array_equal(got, hf_generate(hf, ids, np.ones_like(ids), max_length=10, eos_token_id=None))


def test_sampling_is_seeded_and_top_k_1_is_greedy(checkpoint):
    _, _, model = checkpoint
    ids, mask = left_padded()
    kw = dict(max_new_tokens=12, do_sample=True, temperature=1.3, top_k=0, top_p=0.95, eos_token_id=[])
    first = ours(model, ids, mask, seed=7, **kw)
    assert np.array_equal(ours(model, ids, mask, seed=7, **kw), first)
    assert not np.array_equal(ours(model, ids, mask, seed=8, **kw), first)
    greedy = ours(model, ids, mask, max_new_tokens=12, eos_token_id=[])
    sampled = ours(model, ids, mask, max_new_tokens=12, do_sample=True, top_k=1, seed=3, eos_token_id=[])
    np.testing.assert_array_equal(sampled, greedy)


class Recorder:
    """Wraps a model and records what each forward asked for."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.config = model.config

    def make_cache(self):
        return self.model.make_cache()

    def __call__(self, ids, **kw):
        self.calls.append((ids.shape[1], kw.get("logits_to_keep")))
        return self.model(ids, **kw)


def test_prefill_is_chunked_and_keeps_only_last_logits(checkpoint):
    _, _, model = checkpoint
    rec = Recorder(model)
    prompt = list(range(3, 40))  # 37 tokens
    out = np.array(model_generate(rec, [prompt], max_new_tokens=3, prefill_step_size=16, eos_token_id=[]))
    assert [t for t, _ in rec.calls] == [16, 16, 5, 1, 1]
    assert all(keep == 1 for _, keep in rec.calls)
    np.testing.assert_array_equal(out, np.array(model.generate([prompt], max_new_tokens=3, eos_token_id=[])))


def test_bad_inputs_raise_config_errors(checkpoint):
    _, _, model = checkpoint
    with pytest.raises(ConfigError):
        model.generate(np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(ConfigError):
        model.generate([[1, 2, 3]], attention_mask=[[1, 1]])
    with pytest.raises(ConfigError):
        model.generate([[1, 2, 3]], do_sample=True, temperature=0.0)


# ---- text generation -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    return LlamaTokenizer.from_pretrained(checkpoint[0])


def sp_text(tokenizer, new_ids):
    """The text of the new ids according to sentencepiece itself (as `decode(out[len(prompt):])` gives)."""
    return tokenizer.sp_model.decode(new_ids)


def test_stream_text_matches_sentencepiece_and_greedy_ids(checkpoint, tokenizer):
    _, hf, model = checkpoint
    prompt = "The cat sat on"
    ids = tokenizer.encode(prompt)
    responses = list(stream_generate(model, tokenizer, prompt, max_tokens=20, eos_token_id=[]))
    tokens = [r.token for r in responses]
    expected = hf_generate(hf, np.array([ids]), np.ones((1, len(ids))), max_new_tokens=20, eos_token_id=None)
    assert tokens == expected[0, len(ids) :].tolist()
    assert "".join(r.text for r in responses) == sp_text(tokenizer, tokens)
    last = responses[-1]
    assert last.finish_reason == "length" and all(r.finish_reason is None for r in responses[:-1])
    assert last.prompt_tokens == len(ids) and last.generation_tokens == 20
    assert last.prompt_tps > 0 and last.generation_tps > 0 and last.peak_memory > 0
    assert generate(model, tokenizer, prompt, max_tokens=20, eos_token_id=[]) == "".join(r.text for r in responses)


def test_stream_stops_at_eos_without_its_text(checkpoint, tokenizer):
    _, _, model = checkpoint
    free = [r.token for r in stream_generate(model, tokenizer, "A small boat", max_tokens=10, eos_token_id=[])]
    eos = free[5]
    responses = list(stream_generate(model, tokenizer, "A small boat", max_tokens=10, eos_token_id=eos))
    assert responses[-1].token == eos and responses[-1].finish_reason == "stop"
    first = free.index(eos)
    assert len(responses) == first + 1
    assert "".join(r.text for r in responses) == sp_text(tokenizer, free[:first])


def test_stream_stops_at_stop_string(checkpoint, tokenizer):
    _, _, model = checkpoint
    full = generate(model, tokenizer, "The dog ran", max_tokens=20, eos_token_id=[])
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), "the free run should contain printable text"
    responses = list(stream_generate(model, tokenizer, "The dog ran", max_tokens=20, eos_token_id=[], stop=[stop]))
    assert responses[-1].finish_reason == "stop"
    assert "".join(r.text for r in responses) == full[: full.index(stop)]


def test_stop_strings_hold_back_partial_matches():
    s = _StopStrings(["END", "xyz"])
    assert s.feed("abc E") == ("abc ", False)
    assert s.feed("N") == ("", False)
    assert s.feed("D tail") == ("", True)
    s = _StopStrings(["END"])
    assert s.feed("abc EN") == ("abc ", False)
    assert s.feed("x") == ("ENx", False)
    assert s.flush() == ""


def test_seeded_stream_repeats(checkpoint, tokenizer):
    _, _, model = checkpoint
    kw = dict(max_tokens=15, temperature=0.9, top_p=0.9, min_p=0.05, seed=11, eos_token_id=[])
    first = [r.token for r in stream_generate(model, tokenizer, "Birds sang", **kw)]
    assert [r.token for r in stream_generate(model, tokenizer, "Birds sang", **kw)] == first


def test_cache_continues_a_conversation(checkpoint, tokenizer):
    """Feeding only the new tokens into a kept cache gives what a fresh full prefill gives (Transformers)."""
    _, hf, model = checkpoint
    cache = model.make_cache()
    first_ids = tokenizer.encode("The cat")
    answer = [r.token for r in stream_generate(model, tokenizer, first_ids, max_tokens=5, cache=cache, eos_token_id=[])]
    history = (first_ids + answer)[: cache[0].offset]
    new = tokenizer.encode(" and the dog", add_special_tokens=False)
    full = first_ids + answer + new
    feed = full[len(history) :]
    second = [r.token for r in stream_generate(model, tokenizer, feed, max_tokens=8, cache=cache, eos_token_id=[])]
    expected = hf_generate(hf, np.array([full]), np.ones((1, len(full))), max_new_tokens=8, eos_token_id=None)
    assert second == expected[0, len(full) :].tolist()


def test_prompt_text_with_its_own_bos_gets_no_second_one(tokenizer):
    from mlx_llama.generation.api import _encode_prompt

    ids = _encode_prompt(tokenizer, "<s>The cat")
    assert ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in ids[1:]
    assert _encode_prompt(tokenizer, "The cat") == tokenizer.encode("The cat")


class DecodeOnlyTokenizer:
    """A tokenizer with no streaming detokenizer (e.g. a Transformers one): only encode/decode."""

    def __init__(self, tok):
        self.tok, self.eos_token_id, self.bos_token = tok, tok.eos_token_id, tok.bos_token

    def encode(self, text, add_special_tokens=True):
        return self.tok.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids):
        return self.tok.sp_model.decode(ids)


def test_stream_falls_back_to_incremental_decode(checkpoint, tokenizer):
    _, _, model = checkpoint
    responses = list(stream_generate(model, DecodeOnlyTokenizer(tokenizer), "The cat", 12, eos_token_id=[]))
    assert "".join(r.text for r in responses) == sp_text(tokenizer, [r.token for r in responses])
