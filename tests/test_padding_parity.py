"""Outputs at padding positions and losses over padded batches against Transformers (eager, float32).

Transformers defines every position: a right-pad query sees the valid keys before it (not itself) and a
left-pad query, seeing no key, gets a uniform softmax over all keys. Losses over all positions (QA spans,
LM labels without -100 at pads) depend on those rows, so they must match too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.compare import rel_err
from support.hf_llama import hf_model

import mlx_llama

TOL = 1e-4
LOSS_TOL = 1e-5


def batch(seed=3):
    ids = np.random.default_rng(seed).integers(3, 128, size=(3, 12))
    mask = np.ones_like(ids)
    mask[0, 8:] = 0  # right padded
    mask[1, :4] = 0  # left padded
    ids[mask == 0] = 0
    return ids, mask


def pair(tmp_path, cls_name, **overrides):
    hf = hf_model(cls_name, num_key_value_heads=2, pad_token_id=0, **overrides)
    hf.save_pretrained(tmp_path)
    return hf, getattr(mlx_llama, cls_name).from_pretrained(tmp_path)


def test_causal_lm_every_position_and_unmasked_loss(tmp_path):
    hf, ours = pair(tmp_path, "LlamaForCausalLM")
    ids, mask = batch()
    with torch.no_grad():
        ref = hf(
            torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(ids), output_hidden_states=True
        )
    out = ours(ids, attention_mask=mask, labels=ids, output_hidden_states=True)
    assert rel_err(out.logits, ref.logits) <= TOL
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert rel_err(a, b) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL


def test_question_answering_right_and_left_padded_loss(tmp_path):
    hf, ours = pair(tmp_path, "LlamaForQuestionAnswering")
    ids, mask = batch(4)
    start, end = np.array([2, 6, 1]), np.array([5, 9, 11])
    with torch.no_grad():
        ref = hf(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            start_positions=torch.tensor(start),
            end_positions=torch.tensor(end),
        )
    out = ours(ids, attention_mask=mask, start_positions=start, end_positions=end)
    assert rel_err(out.start_logits, ref.start_logits) <= TOL
    assert rel_err(out.end_logits, ref.end_logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL


def test_token_classification_every_position(tmp_path):
    hf, ours = pair(tmp_path, "LlamaForTokenClassification", num_labels=4)
    ids, mask = batch(5)
    labels = np.random.default_rng(1).integers(0, 4, size=ids.shape)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    out = ours(ids, attention_mask=mask, labels=labels)
    assert rel_err(out.logits, ref.logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL


@pytest.mark.parametrize("cls_name", ["LlamaForSequenceClassification", "OpenLlamaForSequenceClassification"])
def test_sequence_classification_padded(tmp_path, cls_name):
    kw = {"num_labels": 3}
    if cls_name.startswith("Open"):
        import transformers

        torch.manual_seed(0)
        config = transformers.OpenLlamaConfig(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=112,
            num_hidden_layers=2,
            num_attention_heads=4,
            pad_token_id=0,
            max_position_embeddings=64,
            num_labels=3,
        )
        hf = transformers.OpenLlamaForSequenceClassification(config).eval()
        hf.save_pretrained(tmp_path)
        ours = mlx_llama.OpenLlamaForSequenceClassification.from_pretrained(tmp_path)
    else:
        hf, ours = pair(tmp_path, cls_name, **kw)
    ids, mask = batch(6)
    labels = np.array([0, 2, 1])
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    out = ours(ids, attention_mask=mask, labels=labels)
    assert rel_err(out.logits, ref.logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL


def test_open_llama_causal_every_position(tmp_path):
    from transformers.models.deprecated import open_llama as hf_ol

    torch.manual_seed(0)
    config = hf_ol.OpenLlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    hf = hf_ol.OpenLlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path)
    ours = mlx_llama.OpenLlamaForCausalLM.from_pretrained(tmp_path)
    ids, mask = batch(7)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(ids))
    out = ours(ids, attention_mask=mask, labels=ids)
    assert rel_err(out.logits, ref.logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL
