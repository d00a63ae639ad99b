"""Beam search and the generate options against Transformers 4.57's `generate` on a tiny random Llama."""

import warnings

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.batches import PAD, PROMPTS, left_padded  # noqa: E402
from support.checkpoints import write_checkpoint  # noqa: E402

from mlx_llama.modeling.heads import LlamaForCausalLM  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("beam")
    hf = write_checkpoint(path, with_tokenizer=False, vocab_size=128)
    return hf, LlamaForCausalLM.from_pretrained(path, dtype="float32")


def both(hf, model, ids, mask, **kw):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)
    got = model.generate(mx.array(ids), attention_mask=mx.array(mask), **kw)
    return got, ref


def frequent_token(model, ids, mask):
    """A token the free-running beams emit early: used as eos so that beams finish inside the run."""
    free = np.array(model.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=3, eos_token_id=[]))
    return int(np.bincount(free[:, ids.shape[1] + 1 :].reshape(-1)).argmax())


CASES = {
    "single": dict(prompts=PROMPTS[1:2], num_beams=4, max_new_tokens=10),
    "batch-eos-return2": dict(num_beams=3, max_new_tokens=12, num_return_sequences=2, length_penalty=0.7, eos=True),
    "early-true": dict(num_beams=2, max_new_tokens=10, early_stopping=True, eos=True),
    "never-lp": dict(num_beams=3, max_new_tokens=9, early_stopping="never", length_penalty=1.5, eos="any"),
    "penalties": dict(num_beams=3, max_new_tokens=10, repetition_penalty=1.3, no_repeat_ngram_size=2),
    "min-new-bad-words": dict(num_beams=2, max_new_tokens=8, min_new_tokens=5, bad_words_ids=[[7], [5, 6]], eos=True),
}


@pytest.mark.parametrize("case", CASES)
def test_beam_search_ids_match_transformers(checkpoint, case):
    hf, model = checkpoint
    kw = dict(CASES[case])
    ids, mask = left_padded(kw.pop("prompts", PROMPTS))
    eos_rule = kw.pop("eos", None)
    eos = frequent_token(model, ids, mask) if eos_rule else None
    got, ref = both(hf, model, ids, mask, eos_token_id=eos, pad_token_id=PAD, do_sample=False, **kw)
    np.testing.assert_array_equal(np.array(got), ref.numpy())
    if eos_rule is True:
        assert (ref.numpy()[:, ids.shape[1] :] == eos).any(), "the case should have beams ending at eos"


def test_beam_scores_and_dict_output(checkpoint):
    hf, model = checkpoint
    ids, mask = left_padded()
    kw = dict(
        num_beams=3,
        max_new_tokens=6,
        num_return_sequences=3,
        return_dict_in_generate=True,
        output_scores=True,
        eos_token_id=None,
        pad_token_id=PAD,
    )
    got, ref = both(hf, model, ids, mask, **kw)
    np.testing.assert_array_equal(np.array(got.sequences), ref.sequences.numpy())
    np.testing.assert_allclose(np.array(got.sequences_scores), ref.sequences_scores.numpy(), rtol=1e-4, atol=1e-4)
    assert len(got.scores) == len(ref.scores)
    np.testing.assert_allclose(np.array(got.scores[0]), ref.scores[0].numpy(), atol=1e-4)
