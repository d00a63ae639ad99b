"""resize_token_embeddings as Transformers 4.57 (mean resizing, pad_to_multiple_of, ties); the result saves
and loads in Transformers; tokenizer.save_vocabulary writes what Transformers' tokenizer reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from support.checkpoints import train_tokenizer
from support.compare import rel_err, to_np
from support.hf_llama import hf_model

import mlx_llama
from mlx_llama.errors import ConfigError, TokenizerError

TOL = 1e-4


@pytest.mark.parametrize("tied", [False, True])
def test_resize_matches_transformers_and_round_trips(tmp_path, tied):
    hf = hf_model(num_key_value_heads=2, tie_word_embeddings=tied)
    hf.save_pretrained(tmp_path / "src")
    ours = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "src")
    hf.resize_token_embeddings(131, pad_to_multiple_of=8)
    embed = ours.resize_token_embeddings(131, pad_to_multiple_of=8)
    assert embed.weight.shape == (136, 64) and ours.config.vocab_size == hf.config.vocab_size == 136
    ref_in = hf.get_input_embeddings().weight
    assert rel_err(embed.weight, ref_in) <= TOL  # old rows equal, new rows at the old mean (within 1e-9 cov)
    new_rows = to_np(embed.weight)[128:]
    assert np.abs(new_rows - to_np(ref_in)[:128].mean(axis=0)).max() < 1e-5
    if tied:
        assert ours.get_output_embeddings() is None
    else:
        assert rel_err(ours.lm_head.weight, hf.lm_head.weight) <= TOL
    ours.save_pretrained(tmp_path / "out")
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    assert back.config.vocab_size == 136
    if tied:
        assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    ids = np.array([[1, 5, 130, 9, 135, 7]])  # new ids included
    with torch.no_grad():
        ref = back(torch.tensor(ids)).logits
        hf_ref = hf(torch.tensor(ids)).logits
    assert rel_err(ours(ids).logits, ref) <= TOL
    assert rel_err(ours(ids).logits, hf_ref) <= 1e-3  # the 1e-9-covariance draws differ only in the 6th digit


def test_resize_options(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path)
    ours = mlx_llama.LlamaForSequenceClassification.from_pretrained(tmp_path)  # embeddings only, no lm_head
    before = ours.get_input_embeddings().weight
    assert ours.resize_token_embeddings() is ours.get_input_embeddings()
    assert ours.resize_token_embeddings(pad_to_multiple_of=48).weight.shape[0] == 144
    assert np.array_equal(to_np(ours.get_input_embeddings().weight)[:128], to_np(before))
    shrunk = ours.resize_token_embeddings(100, mean_resizing=False)
    assert shrunk.weight.shape[0] == 100 == ours.config.vocab_size
    ours.resize_token_embeddings(120, mean_resizing=False)  # new rows ~ N(0, 0.02), not at the mean
    assert 0.01 < float(np.std(to_np(ours.get_input_embeddings().weight)[100:])) < 0.03
    with pytest.raises(ConfigError, match="pad_to_multiple_of"):
        ours.resize_token_embeddings(10, pad_to_multiple_of=0)


def test_save_vocabulary(tmp_path):
    train_tokenizer(tmp_path / "tok")
    tok = mlx_llama.LlamaTokenizer.from_pretrained(tmp_path / "tok")
    ref = transformers.LlamaTokenizer.from_pretrained(tmp_path / "tok")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours_paths = tok.save_vocabulary(tmp_path / "a", filename_prefix="x")
    ref_paths = ref.save_vocabulary(str(tmp_path / "b"), filename_prefix="x")
    assert [p.split("/")[-1] for p in ours_paths] == [p.split("/")[-1] for p in ref_paths] == ["x-tokenizer.model"]
    reread = transformers.LlamaTokenizer(vocab_file=ours_paths[0], legacy=False)
    assert reread.encode("The cat sat on a mat") == ref.encode("The cat sat on a mat")
    with pytest.raises(TokenizerError, match="directory"):
        tok.save_vocabulary(tmp_path / "missing")


def test_fast_tokenizer_save_vocabulary(tmp_path):
    from mlx_llama.tokenizer import LlamaTokenizerFast

    train_tokenizer(tmp_path / "tok")
    hf_fast = transformers.LlamaTokenizerFast.from_pretrained(tmp_path / "tok", from_slow=True, legacy=False)
    hf_fast.save_pretrained(tmp_path / "fast")
    ours = LlamaTokenizerFast.from_pretrained(tmp_path / "fast")
    (tmp_path / "out").mkdir()
    (path,) = ours.save_vocabulary(tmp_path / "out")
    assert path.endswith("tokenizer.model")
    assert (tmp_path / "out" / "tokenizer.model").read_bytes() == (tmp_path / "tok" / "tokenizer.model").read_bytes()
