"""`model.generate` options against Transformers 4.57: processors, stop strings, streamers, dict outputs,
generation_config=, and clear errors for what is not supported."""

import threading
import warnings

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.batches import PAD, left_padded  # noqa: E402

from mlx_llama.errors import ConfigError  # noqa: E402
from mlx_llama.generation.streamers import TextIteratorStreamer, TextStreamer  # noqa: E402
from mlx_llama.modeling.heads import LlamaForCausalLM  # noqa: E402
from mlx_llama.tokenizer import LlamaTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def setup(tiny_checkpoint):
    path, hf = tiny_checkpoint
    return path, hf, LlamaForCausalLM.from_pretrained(path, dtype="float32")


def hf_gen(hf, ids, mask, **kw):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)


def ours(model, ids, mask, **kw):
    return model.generate(mx.array(ids), attention_mask=mx.array(mask), **kw)


@pytest.mark.parametrize(
    "kw",
    [
        dict(no_repeat_ngram_size=2),
        dict(min_new_tokens=6, eos_token_id="free"),
        dict(bad_words_ids="free"),
        dict(repetition_penalty=1.2, no_repeat_ngram_size=3, min_length=12, eos_token_id="free"),
    ],
    ids=["ngram", "min_new_tokens", "bad_words", "combined"],
)
def test_processors_match_transformers(setup, kw):
    _, hf, model = setup
    ids, mask = left_padded()
    free = np.array(ours(model, ids, mask, max_new_tokens=12, eos_token_id=[], pad_token_id=PAD))[:, ids.shape[1] :]
    kw = dict(kw)
    if kw.get("eos_token_id") == "free":
        kw["eos_token_id"] = int(free[0, 1])  # row 0 would stop at its second new token
    if kw.get("bad_words_ids") == "free":  # a single token and a two-token sequence the free run emits
        kw["bad_words_ids"] = [[int(free[1, 0])], [int(free[0, 2]), int(free[0, 3])]]
    kw.setdefault("eos_token_id", None)
    ref = hf_gen(hf, ids, mask, max_new_tokens=12, pad_token_id=PAD, **kw).numpy()
    got = np.array(ours(model, ids, mask, max_new_tokens=12, pad_token_id=PAD, **kw))
    np.testing.assert_array_equal(got, ref)
    assert not np.array_equal(got[:, ids.shape[1] :], free[:, : ref.shape[1] - ids.shape[1]])


@pytest.fixture(scope="module")
def byte_setup(tmp_path_factory):
    """A byte-fallback tokenizer: Transformers' StopStringCriteria needs every character encodable."""
    from support.checkpoints import corpus
    from support.hf_llama import hf_tiny_model
    from support.spm import write_llama_tokenizer

    path = tmp_path_factory.mktemp("bytes")
    hf = hf_tiny_model(write_llama_tokenizer(path, corpus(), 300, byte_fallback=True))
    hf.save_pretrained(path)
    return path, hf, LlamaForCausalLM.from_pretrained(path, dtype="float32")


def test_stop_strings_match_transformers(byte_setup):
    path, hf, model = byte_setup
    tok, hf_tok = LlamaTokenizer.from_pretrained(path), transformers.LlamaTokenizer.from_pretrained(path)
    ids = np.array([tok.encode("The cat sat on")])
    free = np.array(model.generate(ids, max_new_tokens=16, eos_token_id=[]))
    text = tok.decode(free[0, ids.shape[1] :].tolist())
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    ref = hf_gen(
        hf, ids, np.ones_like(ids), max_new_tokens=16, stop_strings=[stop], tokenizer=hf_tok, eos_token_id=None
    ).numpy()
    got = np.array(model.generate(ids, max_new_tokens=16, stop_strings=[stop], tokenizer=tok, eos_token_id=[]))
    np.testing.assert_array_equal(got, ref)
    assert got.shape[1] < free.shape[1]
    beams = dict(max_new_tokens=10, stop_strings=[stop], num_beams=2, num_return_sequences=2)
    ref = hf_gen(hf, ids, np.ones_like(ids), tokenizer=hf_tok, eos_token_id=None, **beams).numpy()
    np.testing.assert_array_equal(np.array(model.generate(ids, tokenizer=tok, eos_token_id=[], **beams)), ref)
    with pytest.raises(ConfigError, match="tokenizer"):
        model.generate(ids, max_new_tokens=4, stop_strings=["x"])


def test_streamers_print_and_iterate_the_text(setup, capsys):
    path, hf, model = setup
    tok, hf_tok = LlamaTokenizer.from_pretrained(path), transformers.LlamaTokenizer.from_pretrained(path)
    ids = np.array([tok.encode("A small boat")])
    hf_gen(
        hf,
        ids,
        np.ones_like(ids),
        max_new_tokens=15,
        eos_token_id=None,
        streamer=transformers.TextStreamer(hf_tok, skip_prompt=True),
    )
    expected = capsys.readouterr().out
    model.generate(ids, max_new_tokens=15, eos_token_id=[], streamer=TextStreamer(tok, skip_prompt=True))
    assert capsys.readouterr().out == expected and expected.strip()
    streamer = TextIteratorStreamer(tok, timeout=60)
    worker = threading.Thread(
        target=model.generate, args=(ids,), kwargs=dict(max_new_tokens=15, eos_token_id=[], streamer=streamer)
    )
    worker.start()
    pieces = list(streamer)
    worker.join()
    assert "".join(pieces) == tok.decode(np.array(model.generate(ids, max_new_tokens=15, eos_token_id=[]))[0].tolist())


def test_return_dict_scores_and_logits(setup):
    _, hf, model = setup
    ids, mask = left_padded()
    kw = dict(
        max_new_tokens=5,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        eos_token_id=None,
        pad_token_id=PAD,
        repetition_penalty=1.3,
    )
    ref, got = hf_gen(hf, ids, mask, **kw), ours(model, ids, mask, **kw)
    np.testing.assert_array_equal(np.array(got.sequences), ref.sequences.numpy())
    assert len(got.scores) == len(ref.scores) == len(got.logits) == 5
    for ours_steps, ref_steps in ((got.scores, ref.scores), (got.logits, ref.logits)):
        for a, b in zip(ours_steps, ref_steps):
            np.testing.assert_allclose(np.array(a), b.numpy(), atol=1e-4, rtol=1e-4)


def test_generation_config_argument_and_static_cache(setup):
    _, hf, model = setup
    ids, mask = left_padded()
    config = transformers.GenerationConfig(max_new_tokens=7, no_repeat_ngram_size=2, pad_token_id=PAD)
    ref = hf_gen(hf, ids, mask, generation_config=config, eos_token_id=None).numpy()
    got = np.array(ours(model, ids, mask, generation_config=config, eos_token_id=[], cache_implementation="static"))
    np.testing.assert_array_equal(got, ref)


def test_unsupported_options_are_errors(setup):
    _, _, model = setup
    ids = np.array([[1, 5, 6]])
    for kw in (
        dict(output_attentions=True),
        dict(num_beams=2, do_sample=True),
        dict(num_return_sequences=2),
        dict(cache_implementation="offloaded"),
        dict(early_stopping="sometimes"),
        dict(bad_words_ids=[[]]),
    ):
        with pytest.raises(ConfigError):
            model.generate(ids, max_new_tokens=2, **kw)
    with pytest.raises(ConfigError, match="attention_mask="):
        model.generate(ids, np.ones_like(ids), max_new_tokens=2)
    with pytest.warns(UserWarning, match="typical_p"):
        model.generate(ids, max_new_tokens=2, generation_config=transformers.GenerationConfig(typical_p=0.5))


def test_sampling_several_sequences_per_prompt(setup):
    """As Transformers: each prompt row repeated num_return_sequences times, in order (repeat_interleave)."""
    _, _, model = setup
    ids, mask = left_padded()
    out = np.array(
        ours(
            model,
            ids,
            mask,
            max_new_tokens=6,
            do_sample=True,
            num_return_sequences=3,
            seed=1,
            eos_token_id=[],
            pad_token_id=PAD,
        )
    )
    assert out.shape == (9, ids.shape[1] + 6)
    np.testing.assert_array_equal(out[:, : ids.shape[1]], np.repeat(ids, 3, axis=0))
    assert len({tuple(r) for r in out[:3, ids.shape[1] :]}) > 1
