"""Our model classes against Transformers 4.57 (eager attention, float32) on tiny random checkpoints."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from support.compare import rel_err, to_np
from support.hf_llama import hf_model

import mlx_llama
from mlx_llama import (
    LlamaForCausalLM,
)

TOL = 1e-4  # max abs logit difference relative to the logits' scale (float32)
LOSS_TOL = 1e-5

ROPE_CASES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "legacy-type-key": {"type": "linear", "factor": 3.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "yarn-mscale": {"rope_type": "yarn", "factor": 4.0, "mscale": 0.8, "mscale_all_dim": 0.5, "truncate": False},
    "longrope": {
        "rope_type": "longrope",
        "factor": 4.0,
        "short_factor": [1.0 + 0.1 * i for i in range(8)],
        "long_factor": [1.0 + 0.5 * i for i in range(8)],
    },
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "original_max_position_embeddings": 32,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    },
}

ARCH_CASES = {
    "mha": {},
    "gqa": {"num_key_value_heads": 2},
    "mqa": {"num_key_value_heads": 1},
    "head_dim": {"head_dim": 24, "num_key_value_heads": 2},
    "biases": {"attention_bias": True, "mlp_bias": True},
    "tied": {"tie_word_embeddings": True},
    "gelu": {"hidden_act": "gelu_pytorch_tanh"},
}


def load_pair(tmp_path, cls_name="LlamaForCausalLM", **overrides):
    hf = hf_model(cls_name, **overrides)
    hf.save_pretrained(tmp_path)
    ours = getattr(mlx_llama, cls_name).from_pretrained(tmp_path)
    return hf, ours


def ids_for(batch, length, seed=1, vocab=128):
    return np.random.default_rng(seed).integers(3, vocab, size=(batch, length))


def check_causal(hf, ours, ids, **kw):
    with torch.no_grad():
        ref = hf(torch.tensor(ids), labels=torch.tensor(ids), output_hidden_states=True, **kw)
    out = ours(ids, labels=ids, output_hidden_states=True)
    assert rel_err(out.logits, ref.logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL
    assert len(out.hidden_states) == len(ref.hidden_states)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert rel_err(a, b) <= TOL


@pytest.mark.parametrize("case", ARCH_CASES)
def test_architectures(tmp_path, case):
    hf, ours = load_pair(tmp_path, **ARCH_CASES[case])
    check_causal(hf, ours, ids_for(2, 20))


@pytest.mark.parametrize("case", ROPE_CASES)
def test_rope_types(tmp_path, case):
    hf, ours = load_pair(tmp_path, rope_scaling=ROPE_CASES[case], num_key_value_heads=2)
    check_causal(hf, ours, ids_for(2, 24))
    if case in ("dynamic", "yarn", "longrope", "llama3"):  # past max_position_embeddings (64)
        check_causal(hf, ours, ids_for(1, 100, seed=2))
        check_causal(hf, ours, ids_for(1, 30, seed=3))  # dynamic resets below the max length


def test_left_padding_and_attention_mask(tmp_path):
    hf, ours = load_pair(tmp_path, num_key_value_heads=2)
    ids = ids_for(3, 16)
    mask = np.ones_like(ids)
    mask[0, :5] = 0
    mask[1, :1] = 0
    mask[2, 12:] = 0  # right padding on one row
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    out = ours(ids, attention_mask=mask, output_hidden_states=True)
    valid = mask.astype(bool)
    for a, b in [(out.logits, ref.logits), *zip(out.hidden_states, ref.hidden_states)]:
        a, b = to_np(a)[valid], to_np(b)[valid]
        assert np.abs(a - b).max() / np.abs(b).max() <= TOL


def test_position_ids_generate_style_and_packed(tmp_path):
    hf, ours = load_pair(tmp_path)
    ids = ids_for(2, 12)
    mask = np.ones_like(ids)
    mask[0, :4] = 0
    pos = np.clip(np.cumsum(mask, -1) - 1, 0, None)
    pos[mask == 0] = 1
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits
    out = ours(ids, attention_mask=mask, position_ids=pos).logits
    valid = mask.astype(bool)
    assert rel_err(to_np(out)[valid], to_np(ref)[valid]) <= TOL
    packed = np.array([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]])  # non-contiguous: the explicit rope path
    with torch.no_grad():
        ref = hf(torch.tensor(ids[:1]), position_ids=torch.tensor(packed), use_cache=True).logits
    assert rel_err(ours(ids[:1], position_ids=packed).logits, ref) <= TOL


def test_inputs_embeds_and_4d_mask(tmp_path):
    hf, ours = load_pair(tmp_path, num_key_value_heads=2)
    emb = np.random.default_rng(0).normal(size=(2, 10, 64)).astype(np.float32)
    with torch.no_grad():
        ref = hf(inputs_embeds=torch.tensor(emb)).logits
    assert rel_err(ours(inputs_embeds=emb).logits, ref) <= TOL
    additive = np.triu(np.full((10, 10), -1e9, np.float32), 1)[None, None].repeat(2, 0)
    additive[1, :, :, :3] = -1e9
    additive[1, 0, np.arange(3), np.arange(3)] = 0
    ids = ids_for(2, 10)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(additive)).logits
    assert rel_err(ours(ids, attention_mask=additive).logits, ref) <= TOL
    with pytest.raises(ValueError, match="exactly one"):
        ours(ids, inputs_embeds=emb)


def test_output_attentions(tmp_path):
    hf, ours = load_pair(tmp_path, num_key_value_heads=2)
    ids = ids_for(2, 9)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), output_attentions=True)
    out = ours(ids, output_attentions=True)
    assert rel_err(out.logits, ref.logits) <= TOL
    for a, b in zip(out.attentions, ref.attentions):
        assert a.shape == tuple(b.shape)
        assert np.abs(to_np(a) - to_np(b)).max() <= 1e-5


@pytest.mark.parametrize("problem", ["regression", "single_label_classification", "multi_label_classification"])
def test_sequence_classification(tmp_path, problem):
    num_labels = 1 if problem == "regression" else 3
    hf, ours = load_pair(tmp_path, "LlamaForSequenceClassification", num_labels=num_labels, pad_token_id=0)
    ids = ids_for(3, 8)
    ids[0, 5:] = 0  # right padded
    ids[1, :2] = 0  # left padded
    ids[2, 3] = 0  # a pad id inside the text is skipped by the rightmost-non-pad rule
    rng = np.random.default_rng(0)
    labels = {
        "regression": rng.normal(size=(3,)).astype(np.float32),
        "single_label_classification": np.array([0, 2, 1]),
        "multi_label_classification": rng.integers(0, 2, size=(3, 3)).astype(np.float32),
    }[problem]
    with torch.no_grad():
        ref = hf(torch.tensor(ids), labels=torch.tensor(labels))
    out = ours(ids, labels=labels)
    assert hf.config.problem_type == ours.config.problem_type == problem
    assert rel_err(out.logits, ref.logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL


def test_sequence_classification_pooling_errors(tmp_path):
    _, ours = load_pair(tmp_path, "LlamaForSequenceClassification")
    with pytest.raises(ValueError, match="padding token"):
        ours(ids_for(2, 5))
    assert ours(ids_for(1, 5)).logits.shape == (1, 2)


def test_question_answering(tmp_path):
    hf, ours = load_pair(tmp_path, "LlamaForQuestionAnswering", num_key_value_heads=2)
    assert "transformer" in ours and "qa_outputs" in ours
    ids = ids_for(4, 10)
    start, end = np.array([1, 12, -3, 9]), np.array([4, 2, 30, 9])  # out of range: ignored; negative: 0
    with torch.no_grad():
        ref = hf(torch.tensor(ids), start_positions=torch.tensor(start), end_positions=torch.tensor(end))
    out = ours(ids, start_positions=start, end_positions=end)
    assert rel_err(out.start_logits, ref.start_logits) <= TOL
    assert rel_err(out.end_logits, ref.end_logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL


def test_token_classification(tmp_path):
    hf, ours = load_pair(tmp_path, "LlamaForTokenClassification", num_labels=5)
    ids = ids_for(2, 7)
    labels = np.random.default_rng(0).integers(0, 5, size=(2, 7))
    labels[0, :2] = -100
    with torch.no_grad():
        ref = hf(torch.tensor(ids), labels=torch.tensor(labels))
    out = ours(ids, labels=labels)
    assert rel_err(out.logits, ref.logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL
    ours.train()  # dropout 0.1 is active only in training, as in Transformers
    a, b = ours(ids).logits, ours(ids).logits
    assert not mx.allclose(a, b).item()


def test_causal_lm_loss_ignore_index(tmp_path):
    hf, ours = load_pair(tmp_path)
    ids = ids_for(2, 12)
    labels = ids.copy()
    labels[:, :5] = -100
    with torch.no_grad():
        ref = hf(torch.tensor(ids), labels=torch.tensor(labels)).loss
    assert abs(ours(ids, labels=labels).loss.item() - ref.item()) <= LOSS_TOL


@pytest.mark.parametrize("dtype,tol", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_half_precision(tmp_path, dtype, tol):
    """Measured: fp16 ~1e-3 and bf16 ~1e-2 relative to the float32 Transformers logits (tolerances 5x)."""
    hf, _ = load_pair(tmp_path, num_key_value_heads=2)
    ours = LlamaForCausalLM.from_pretrained(tmp_path, dtype=dtype)
    assert ours.model.embed_tokens.weight.dtype == getattr(mx, dtype)
    ids = ids_for(2, 16)
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits
    assert rel_err(ours(ids).logits, ref) <= tol


def test_base_model_from_causal_and_base_checkpoints(tmp_path):
    """LlamaModel loads a causal-LM checkpoint (decoder only) and a bare LlamaModel checkpoint."""
    hf = hf_model(num_key_value_heads=2)
    hf.save_pretrained(tmp_path / "causal")
    hf.model.save_pretrained(tmp_path / "base")
    ids = ids_for(2, 11)
    with torch.no_grad():
        ref = hf.model(torch.tensor(ids)).last_hidden_state
    with pytest.warns(UserWarning, match="lm_head"):
        from_causal = mlx_llama.LlamaModel.from_pretrained(tmp_path / "causal")
    from_base = mlx_llama.LlamaModel.from_pretrained(tmp_path / "base")
    for model in (from_causal, from_base):
        assert rel_err(model(ids).last_hidden_state, ref) <= TOL
