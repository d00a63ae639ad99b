"""Open-Llama against Transformers 4.57's deprecated OpenLlama classes (eager path, float32) on tiny checkpoints."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest
import torch
from support.compare import rel_err, to_np
from transformers.models.deprecated import open_llama as hf_ol

import mlx_llama
from mlx_llama import ConfigError, OpenLlamaConfig, OpenLlamaForCausalLM, OpenLlamaForSequenceClassification
from mlx_llama.loading import load_model

TOL = 1e-4  # max abs logit difference relative to the logits' scale
LOSS_TOL = 1e-5
TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)


def hf_model(cls_name="OpenLlamaForCausalLM", seed=0, **overrides):
    """A random Transformers Open-Llama; norms (and the embedding LayerNorm's bias) are randomised too, and
    q/k scaled up so attention is peaked: with the 0.02-std init it is near uniform and rope barely matters."""
    torch.manual_seed(seed)
    model = getattr(hf_ol, cls_name)(hf_ol.OpenLlamaConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((0.0 if name.endswith("bias") else 1.0) + 0.1 * torch.randn_like(p))
            elif "q_proj" in name or "k_proj" in name:
                p.mul_(6.0)
    return model


def load_pair(tmp_path, cls_name="OpenLlamaForCausalLM", **overrides):
    hf = hf_model(cls_name, **overrides)
    hf.save_pretrained(tmp_path)
    return hf, getattr(mlx_llama, cls_name).from_pretrained(tmp_path)


def ids_for(batch, length, seed=1):
    return np.random.default_rng(seed).integers(3, 128, size=(batch, length))


def check_causal(hf, ours, ids, mask=None):
    """Logits, loss and hidden states; with a padding mask only the real tokens are compared."""
    kw = {} if mask is None else {"attention_mask": mask}
    with torch.no_grad():
        ref = hf(
            torch.tensor(ids),
            labels=torch.tensor(ids),
            output_hidden_states=True,
            **{k: torch.tensor(v) for k, v in kw.items()},
        )
    out = ours(ids, labels=ids, output_hidden_states=True, **kw)
    valid = np.ones(ids.shape, bool) if mask is None else mask.astype(bool)
    assert len(out.hidden_states) == len(ref.hidden_states)
    for a, b in [(out.logits, ref.logits), *zip(out.hidden_states, ref.hidden_states)]:
        assert rel_err(to_np(a)[valid], to_np(b)[valid]) <= TOL
    if mask is None:
        assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL


CAUSAL_CASES = {
    "stable+shared": dict(),
    "stable+lm_head": dict(shared_input_output_embedding=False),
    "plain+shared": dict(use_stable_embedding=False),
    "plain+lm_head": dict(use_stable_embedding=False, shared_input_output_embedding=False),
    "linear": dict(rope_scaling={"type": "linear", "factor": 2.0}),
}


@pytest.mark.parametrize("case", CAUSAL_CASES)
def test_causal_lm_parity(tmp_path, case):
    overrides = CAUSAL_CASES[case]
    hf, ours = load_pair(tmp_path, **overrides)
    shared = overrides.get("shared_input_output_embedding", True)
    assert ("lm_head" in ours) is (not shared)
    assert ("embed_layer_norm" in ours.model) is overrides.get("use_stable_embedding", True)
    check_causal(hf, ours, ids_for(2, 20))
    ids = ids_for(3, 12, seed=2)
    mask = np.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[2, 9:] = 0  # right padding
    check_causal(hf, ours, ids, mask)


def test_dynamic_rope_grows_with_the_cache_and_never_resets(tmp_path):
    hf, ours = load_pair(tmp_path, rope_scaling={"type": "dynamic", "factor": 4.0})
    check_causal(hf, ours, ids_for(2, 24))  # within max_position_embeddings (64): plain rope
    check_causal(hf, ours, ids_for(1, 120, seed=2))  # past it: the NTK base grows
    check_causal(hf, ours, ids_for(1, 30, seed=3))  # shorter again: Open-Llama keeps the grown base
    fresh = OpenLlamaForCausalLM.from_pretrained(tmp_path)  # guard: a reset would have failed the check above
    assert rel_err(fresh(ids_for(1, 30, seed=3)).logits, ours(ids_for(1, 30, seed=3)).logits) > 10 * TOL


def test_inputs_embeds_skip_the_embedding_norm_and_4d_mask_means_attend(tmp_path):
    hf, ours = load_pair(tmp_path)
    emb = np.random.default_rng(0).normal(size=(2, 10, 64)).astype(np.float32)
    with torch.no_grad():
        ref = hf(inputs_embeds=torch.tensor(emb)).logits
    assert rel_err(ours(inputs_embeds=emb).logits, ref) <= TOL
    keep = np.tril(np.ones((10, 10), np.float32))[None, None].repeat(2, 0)
    keep[1, :, 4:, :3] = 0  # row 1: later queries do not see the first three keys
    keep[1, 0, 3] = 0  # a query that sees nothing: Transformers' clamped scores give uniform attention
    ids = ids_for(2, 10)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(keep)).logits
    assert rel_err(ours(ids, attention_mask=keep).logits, ref) <= TOL
    assert rel_err(ours(ids, attention_mask=keep.astype(bool)).logits, ref) <= TOL
    with pytest.raises(ValueError, match="4D attention_mask shape"):
        ours(ids, attention_mask=keep[:, :, :, :9])


def test_training_mode_dropout_and_causal_only_mask(tmp_path):
    hf, ours = load_pair(tmp_path, hidden_dropout_prob=0.0)
    ids = ids_for(2, 12)
    mask = np.ones_like(ids)
    mask[0, :5] = 0
    hf.train()
    ours.train()  # use_memory_efficient_attention: Transformers trains with the causal mask only
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    assert rel_err(ours(ids, attention_mask=mask).logits, ref) <= TOL
    _, dropped = load_pair(tmp_path / "dropout")  # hidden_dropout_prob 0.1 on the MLP output
    dropped.train()
    assert not mx.allclose(dropped(ids).logits, dropped(ids).logits).item()
    dropped.eval()
    assert mx.array_equal(dropped(ids).logits, dropped(ids).logits).item()


@pytest.mark.parametrize("problem", ["regression", "single_label_classification"])
def test_sequence_classification_legacy_pooling(tmp_path, problem):
    num_labels = 1 if problem == "regression" else 3
    hf, ours = load_pair(tmp_path, "OpenLlamaForSequenceClassification", num_labels=num_labels)
    ids = ids_for(4, 6)
    ids[0, 4:] = 0  # right padded: the token before the first pad (3)
    ids[1, [1, 5]] = 0  # pad inside the text: still the token before the *first* pad (0)
    ids[2, :] = 0  # all pads: -1 mod T, the last position (5)
    assert np.array_equal(to_np(ours.pooling_index(mx.array(ids), 4, 6)), [3, 0, 5, 5])  # row 3: no pad
    labels = np.array([0.5, -1.0, 2.0, 0.1], np.float32) if num_labels == 1 else np.array([0, 2, 1, 1])
    mask = (ids != 0).astype(np.int64)
    mask[2] = 1
    for kw in ({}, {"attention_mask": mask}):
        with torch.no_grad():
            ref = hf(torch.tensor(ids), labels=torch.tensor(labels), **{k: torch.tensor(v) for k, v in kw.items()})
        out = ours(ids, labels=labels, **kw)
        valid = [0, 3] if kw else [0, 1, 2, 3]  # with a mask, pooled pad positions are undefined in both
        assert rel_err(to_np(out.logits)[valid], to_np(ref.logits)[valid]) <= TOL
        if not kw:
            assert abs(out.loss.item() - ref.loss.item()) <= LOSS_TOL
    assert ours.config.problem_type == hf.config.problem_type == problem


def test_config_defaults_and_round_trip_with_transformers(tmp_path):
    ours, ref = OpenLlamaConfig(), hf_ol.OpenLlamaConfig()
    for key, value in ours.to_dict().items():
        if key not in ("architectures", "torch_dtype", "id2label"):
            assert getattr(ref, key) == value, key
    assert ours.id2label == ref.id2label
    assert (ours.vocab_size, ours.pad_token_id, ours.model_type) == (100000, 0, "open-llama")
    for llama_only in ("num_key_value_heads", "head_dim", "attention_bias", "mlp_bias", "attention_dropout"):
        assert llama_only not in ours.to_dict()
    cfg = OpenLlamaConfig(**TINY, rope_scaling={"type": "dynamic", "factor": 3.0}, use_stable_embedding=False)
    cfg.save_pretrained(tmp_path)
    back = hf_ol.OpenLlamaConfig.from_pretrained(tmp_path)  # Transformers' strict rope check accepts it
    assert back.rope_scaling == {"type": "dynamic", "factor": 3.0} and back.use_stable_embedding is False
    back.save_pretrained(tmp_path / "hf")
    again = OpenLlamaConfig.from_pretrained(tmp_path / "hf")
    assert again.rope_scaling["type"] == "dynamic" and again.vocab_size == 128


def test_config_legacy_and_unused_keys():
    cfg = OpenLlamaConfig.from_dict(
        {
            **TINY,
            "use_memorry_efficient_attention": False,
            "use_memory_efficient_attention": True,
            "num_key_value_heads": 2,
        }
    )
    assert cfg.use_memory_efficient_attention is False  # the misspelled key wins, as in Transformers
    assert cfg.num_key_value_heads == 4  # Open-Llama has no GQA: the key is kept but unused
    assert cfg.to_dict()["num_key_value_heads"] == 2
    assert OpenLlamaForCausalLM(cfg).model.layers[0].self_attn.k_proj.weight.shape == (64, 64)


BAD_ROPE = [
    {"type": "linear"},
    {"type": "linear", "factor": 2.0, "rope_type": "linear"},
    {"type": "yarn", "factor": 2.0},
    {"rope_type": "linear", "factor": 2.0},
    {"type": "linear", "factor": 2},
    {"type": "dynamic", "factor": 1.0},
    [("type", "linear"), ("factor", 2.0)],
]


@pytest.mark.parametrize("rope_scaling", BAD_ROPE, ids=[str(r) for r in BAD_ROPE])
def test_rope_scaling_validation_as_transformers(rope_scaling):
    with pytest.raises(ValueError):
        hf_ol.OpenLlamaConfig(rope_scaling=rope_scaling)
    with pytest.raises(ConfigError, match="rope_scaling"):
        OpenLlamaConfig(rope_scaling=rope_scaling)


def test_embedding_init_and_save_for_transformers(tmp_path):
    stable = OpenLlamaForCausalLM(OpenLlamaConfig(**{**TINY, "vocab_size": 2000}))
    weight = to_np(stable.model.embed_tokens.weight)
    assert not weight[0].any()  # pad 0
    assert abs(weight[1:].std() - math.sqrt(2 / (2000 + 64))) < 0.002  # Xavier normal
    plain = OpenLlamaForCausalLM(OpenLlamaConfig(**{**TINY, "vocab_size": 2000, "use_stable_embedding": False}))
    assert abs(to_np(plain.model.embed_tokens.weight)[1:].std() - 0.02) < 0.002
    ours = OpenLlamaForSequenceClassification(OpenLlamaConfig(**TINY, num_labels=3, use_stable_embedding=True))
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["OpenLlamaForSequenceClassification"]
    hf = hf_ol.OpenLlamaForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = ids_for(2, 9)
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits
    assert rel_err(ours(ids).logits, ref) <= TOL


def hf_greedy(hf, ids, mask, steps):
    """Transformers' Open-Llama generation without `generate` (unavailable in 4.57): full forwards, argmax,
    positions cumsum(mask) - 1 as its prepare_inputs_for_generation computes them."""
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        with torch.no_grad():
            logits = hf(ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids.numpy()


def test_transformers_checkpoint_converts_and_generates(tmp_path):
    from support.checkpoints import train_tokenizer

    from mlx_llama.cli import main as cli_main
    from mlx_llama.convert import main as convert_main

    src, out = tmp_path / "hf", tmp_path / "mlx"
    hf = hf_model(eos_token_id=None, rope_scaling={"type": "linear", "factor": 2.0})
    with torch.no_grad():  # larger logits than the init, so greedy choices are not near-ties
        hf.model.embed_tokens.weight.mul_(30.0)
    hf.save_pretrained(src)
    train_tokenizer(src, vocab_size=128)
    assert convert_main([str(src), str(out), "--dtype", "float32", "--quiet"]) == 0
    model = load_model(out)
    assert type(model) is OpenLlamaForCausalLM and "lm_head" not in model
    ids = ids_for(2, 7)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    expected = hf_greedy(hf, ids, mask, 6)
    got = to_np(model.generate(mx.array(ids), attention_mask=mx.array(mask), max_new_tokens=6)).astype(np.int64)
    assert np.array_equal(got, expected)
    assert (
        cli_main(
            [
                "generate",
                "--model",
                str(out),
                "--prompt",
                "the cat",
                "--max-tokens",
                "4",
                "--no-chat-template",
                "--quiet",
            ]
        )
        == 0
    )


def test_bare_open_llama_model_from_pretrained_and_load(tmp_path):
    """OpenLlamaModel reads Open-Llama's config (stable embedding, rope checks) and load() takes a bare dir."""
    hf = hf_model("OpenLlamaModel")
    hf.save_pretrained(tmp_path)
    ids = ids_for(2, 10)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    ours = mlx_llama.OpenLlamaModel.from_pretrained(tmp_path)
    assert isinstance(ours.config, OpenLlamaConfig) and "embed_layer_norm" in ours
    loaded = load_model(tmp_path)
    assert type(loaded) is mlx_llama.OpenLlamaModel
    for model in (ours, loaded):
        out = model(ids, attention_mask=mask).last_hidden_state
        assert rel_err(out, ref) <= TOL  # every position, pads included
