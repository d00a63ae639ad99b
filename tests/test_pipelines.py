"""Auto classes and pipelines against Transformers 4.57 (its pipelines on the same tiny checkpoints)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
from support.hf_llama import hf_model

import mlx_llama
from mlx_llama import auto
from mlx_llama.errors import ConfigError
from mlx_llama.pipelines import pipeline

PROMPTS = ["The cat sat on", "A small boat sailed over the quiet lake"]


@pytest.fixture(scope="module")
def causal(tiny_checkpoint):
    path, hf = tiny_checkpoint
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

    hf_ol.OpenLlamaForCausalLM(
        hf_ol.OpenLlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        )
    ).save_pretrained(tmp_path)
    assert isinstance(auto.AutoConfig.from_pretrained(tmp_path), mlx_llama.OpenLlamaConfig)
    assert type(auto.AutoModelForCausalLM.from_pretrained(tmp_path)) is mlx_llama.OpenLlamaForCausalLM
    assert type(auto.AutoModel.from_config(auto.AutoConfig.from_pretrained(tmp_path))) is mlx_llama.OpenLlamaModel
    with pytest.raises(ConfigError, match="open-llama"):
        auto.AutoModelForTokenClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "kw",
    [
        dict(do_sample=False, max_new_tokens=12),
        dict(do_sample=False, max_new_tokens=8, return_full_text=False),
        dict(num_beams=3, num_return_sequences=2, max_new_tokens=6, do_sample=False),
    ],
    ids=["greedy", "new-text", "beams"],
)
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
    with pytest.warns(UserWarning, match="default device"):  # the seed page's call, as written
        seed_style = pipeline(task="text-generation", model=path, dtype=torch.float16, device=0)
    assert str(seed_style.model.model.embed_tokens.weight.dtype) == "mlx.core.float16"
    loaded = pipeline("text-generation", model=ours.model, tokenizer=ours.tokenizer)
    assert loaded(PROMPTS[0], do_sample=False, max_new_tokens=3) == ours(PROMPTS[0], do_sample=False, max_new_tokens=3)
    with pytest.raises(ConfigError, match="tokenizer="):
        pipeline("text-generation", model=ours.model)
    with pytest.raises(ConfigError, match="generate"):
        ours(PROMPTS[0], max_new_tokens=2, output_attentions=True)


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
    hf = _pair(
        tmp_path,
        causal[0],
        "LlamaForTokenClassification",
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
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
    start = torch.softmax(out.start_logits[0, len(q_ids) :], -1).numpy()
    end = torch.softmax(out.end_logits[0, len(q_ids) :], -1).numpy()
    best = max(
        ((s, e) for s in range(len(c_ids)) for e in range(s, min(s + 15, len(c_ids)))),
        key=lambda se: start[se[0]] * end[se[1]],
    )
    assert answer["score"] == pytest.approx(float(start[best[0]] * end[best[1]]), rel=1e-4)
    expected = tok.decode(c_ids[best[0] : best[1] + 1]).strip()
    assert answer["answer"] == expected and context[answer["start"] : answer["end"]] == expected


def test_text_generation_chat_matches_transformers(causal, tmp_path):
    import json
    import shutil

    path, hf, _ = causal
    for item in path.iterdir():
        shutil.copy(item, tmp_path / item.name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    chat = [{"role": "user", "content": "The cat sat on"}]
    got = pipeline("text-generation", model=tmp_path)(chat, do_sample=False, max_new_tokens=8)
    ref = hf_pipe(
        "text-generation",
        hf,
        transformers.LlamaTokenizer.from_pretrained(tmp_path),
        chat,
        do_sample=False,
        max_new_tokens=8,
    )
    assert got == ref and got[0]["generated_text"][-1]["role"] == "assistant"


def test_token_classification_fast_tokenizer_offsets(causal, tmp_path):
    """With a tokenizer.json (fast tokenizer), entities carry character offsets, as Transformers' do."""
    labels = {0: "O", 1: "B-X", 2: "I-X"}
    hf = hf_model(
        "LlamaForTokenClassification",
        vocab_size=160,
        pad_token_id=0,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    hf.save_pretrained(tmp_path)
    fast = transformers.LlamaTokenizerFast.from_pretrained(causal[0], from_slow=True, legacy=False)
    fast.save_pretrained(tmp_path)
    ours = pipeline("token-classification", model=tmp_path)
    assert type(ours.tokenizer).__name__ == "LlamaTokenizerFast"
    got, ref = ours(PROMPTS[1]), hf_pipe("token-classification", hf, fast, PROMPTS[1])
    keys = ("entity", "index", "word", "start", "end")
    assert [tuple(d[k] for k in keys) for d in got] == [tuple(d[k] for k in keys) for d in ref]
    assert all(d["start"] is not None for d in got)
    text = "The cat sat on a mat and the dog ran to the park while birds sang"
    got = ours(text, aggregation_strategy="simple")
    ref = hf_pipe("token-classification", hf, fast, text, aggregation_strategy="simple")
    keys = ("entity_group", "word", "start", "end")
    assert [tuple(d[k] for k in keys) for d in got] == [tuple(d[k] for k in keys) for d in ref]
    np.testing.assert_allclose([d["score"] for d in got], [float(d["score"]) for d in ref], atol=1e-5)
    with pytest.raises(ConfigError, match="aggregation_strategy"):
        ours(text, aggregation_strategy="first")
