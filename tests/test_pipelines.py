"""Auto classes and pipelines against Transformers 4.57 (its pipelines on the same tiny checkpoints)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
from generation_helpers import hf_tiny_model, train_tokenizer
from hf_oracle import hf_model

import mlx_llama
from mlx_llama import auto
from mlx_llama.errors import ConfigError
from mlx_llama.pipelines import pipeline

PROMPTS = ["The cat sat on", "A small boat sailed over the quiet lake"]


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe")
    vocab = train_tokenizer(path)
    hf = hf_tiny_model(vocab)
    hf.save_pretrained(path)
    return path, hf, transformers.LlamaTokenizer.from_pretrained(path)


def hf_pipe(task, model, tok, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.pipeline(task, model=model, tokenizer=tok)(*args, **kw)


def test_auto_classes(causal, tmp_path):
    path, _, _ = causal
    assert isinstance(auto.AutoConfig.from_pretrained(path), mlx_llama.LlamaConfig)
    assert type(auto.AutoModelForCausalLM.from_pretrained(path)) is mlx_llama.LlamaForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert type(auto.AutoModel.from_pretrained(path)) is mlx_llama.LlamaModel
        qa = auto.AutoModelForQuestionAnswering.from_pretrained(path)
    assert type(qa) is mlx_llama.LlamaForQuestionAnswering
    assert type(auto.AutoTokenizer.from_pretrained(path)) is mlx_llama.LlamaTokenizer
    assert auto.AutoTokenizer.from_pretrained(path, padding_side="left").padding_side == "left"
    from transformers.models.deprecated import open_llama as hf_ol

    hf_ol.OpenLlamaForCausalLM(hf_ol.OpenLlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path)
    assert isinstance(auto.AutoConfig.from_pretrained(tmp_path), mlx_llama.OpenLlamaConfig)
    assert type(auto.AutoModelForCausalLM.from_pretrained(tmp_path)) is mlx_llama.OpenLlamaForCausalLM
    assert type(auto.AutoModel.from_config(auto.AutoConfig.from_pretrained(tmp_path))) is mlx_llama.OpenLlamaModel
    with pytest.raises(ConfigError, match="open-llama"):
        auto.AutoModelForTokenClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("kw", [
    dict(do_sample=False, max_new_tokens=12),
    dict(do_sample=False, max_new_tokens=8, return_full_text=False),
    dict(num_beams=3, num_return_sequences=2, max_new_tokens=6, do_sample=False),
], ids=["greedy", "new-text", "beams"])
def test_text_generation_matches_transformers(causal, kw):
    path, hf, hf_tok = causal
    ours = pipeline("text-generation", model=path, dtype="float32")
    for prompts in (PROMPTS[0], PROMPTS):
        assert ours(prompts, **kw) == hf_pipe("text-generation", hf, hf_tok, prompts, **kw)


def test_text_generation_batched_left_padding(causal):
    path, hf, hf_tok = causal
    ours = pipeline("text-generation", model=path, batch_size=2)
    ours.tokenizer.pad_token, ours.tokenizer.padding_side = "</s>", "left"
    hf_tok.pad_token, hf_tok.padding_side = "</s>", "left"
    kw = dict(do_sample=False, max_new_tokens=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.pipeline("text-generation", model=hf, tokenizer=hf_tok, batch_size=2)(PROMPTS, **kw)
    assert ours(PROMPTS, **kw) == ref


def test_default_is_sampling_with_256_tokens(causal):
    path, _, _ = causal
    ours = pipeline("text-generation", model=path)
    assert ours._generation_defaults() == {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
    with pytest.raises(ConfigError, match="unknown task"):
        pipeline("summarization", model=path)


def _pair(tmp_path, tok_dir, cls_name, **kw):
    hf = hf_model(cls_name, vocab_size=160, pad_token_id=0, **kw)
    hf.save_pretrained(tmp_path)
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tok_dir / name).read_bytes())
    return hf


def test_text_classification_matches_transformers(causal, tmp_path):
    hf = _pair(tmp_path, causal[0], "LlamaForSequenceClassification", num_labels=3)
    hf_tok = transformers.LlamaTokenizer.from_pretrained(tmp_path)
    ours = pipeline("text-classification", model=tmp_path)
    for kw in ({}, {"top_k": None}, {"top_k": 2, "function_to_apply": "sigmoid"}):
        for inputs in (PROMPTS[0], PROMPTS):
            got, ref = ours(inputs, **kw), hf_pipe("text-classification", hf, hf_tok, inputs, **kw)
            flat_got = np.array([[d["label"], d["score"]] for d in np.ravel(got)], dtype=object)
            flat_ref = np.array([[d["label"], d["score"]] for d in np.ravel(ref)], dtype=object)
            assert np.shape(got) == np.shape(ref) and list(flat_got[:, 0]) == list(flat_ref[:, 0])
            np.testing.assert_allclose(flat_got[:, 1].astype(float), flat_ref[:, 1].astype(float), atol=1e-5)


def test_token_classification_matches_transformers(causal, tmp_path):
    labels = {0: "O", 1: "B-X", 2: "I-X"}
    hf = _pair(tmp_path, causal[0], "LlamaForTokenClassification", num_labels=3, id2label=labels,
               label2id={v: k for k, v in labels.items()})
    hf_tok = transformers.LlamaTokenizer.from_pretrained(tmp_path)
    got = pipeline("token-classification", model=tmp_path)(PROMPTS[1])
    ref = hf_pipe("token-classification", hf, hf_tok, PROMPTS[1])
    assert [(d["entity"], d["index"], d["word"]) for d in got] == [(d["entity"], d["index"], d["word"]) for d in ref]
    np.testing.assert_allclose([d["score"] for d in got], [float(d["score"]) for d in ref], atol=1e-5)
    assert any(d["entity"] != "O" for d in got)


def test_question_answering_best_span_from_transformers_logits(causal, tmp_path):
    hf = _pair(tmp_path, causal[0], "LlamaForQuestionAnswering")
    ours = pipeline("question-answering", model=tmp_path)
    question, context = "Where did the cat sit?", "The cat sat on a mat and the dog ran to the park"
    answer = ours(question=question, context=context)
    tok = ours.tokenizer
    q_ids = tok(question)["input_ids"]
    c_ids = tok.convert_tokens_to_ids(tok.tokenize(context))
    with torch.no_grad():
        out = hf(torch.tensor([q_ids + c_ids]))
    start = torch.softmax(out.start_logits[0, len(q_ids):], -1).numpy()
    end = torch.softmax(out.end_logits[0, len(q_ids):], -1).numpy()
    best = max(((s, e) for s in range(len(c_ids)) for e in range(s, min(s + 15, len(c_ids)))),
               key=lambda se: start[se[0]] * end[se[1]])
    assert answer["score"] == pytest.approx(float(start[best[0]] * end[best[1]]), rel=1e-4)
    expected = tok.decode(c_ids[best[0] : best[1] + 1]).strip()
    assert answer["answer"] == expected and context[answer["start"] : answer["end"]] == expected
