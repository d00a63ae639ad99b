"""Gradients, cached decoding, loading/saving and config validation of the model core."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
import transformers
from mlx.utils import tree_flatten
from support.compare import rel_err, to_np
from support.hf_llama import hf_config, hf_model

from mlx_llama import CheckpointError, ConfigError, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
from mlx_llama.modeling.cpu_linear import CPUQuantizedLinear


def test_gradients_match_pytorch(tmp_path):
    hf = hf_model(num_key_value_heads=2, pad_token_id=0, attention_bias=True)
    hf.train()
    hf.save_pretrained(tmp_path)
    ours = LlamaForCausalLM.from_pretrained(tmp_path)
    ours.train()  # dropout is 0 here; training mode gives the pad row zero gradient, as torch's padding_idx
    ids = np.random.default_rng(0).integers(1, 128, size=(2, 12))
    ids[0, :3] = 0
    labels = ids.copy()
    labels[0, :3] = -100
    hf.zero_grad()
    hf(torch.tensor(ids), labels=torch.tensor(labels)).loss.backward()
    ref = {k: p.grad for k, p in hf.named_parameters()}

    def loss_fn(model):
        return model(ids, labels=labels).loss

    _, grads = nn.value_and_grad(ours, loss_fn)(ours)
    grads = dict(tree_flatten(grads))
    assert set(grads) == set(ref)
    for name, g in grads.items():
        assert rel_err(g, ref[name]) <= 1e-4, name
    assert np.all(to_np(grads["model.embed_tokens.weight"])[0] == 0)


@pytest.mark.parametrize("left_pad", [False, True])
def test_cached_decoding_equals_full_forward(tmp_path, left_pad):
    hf_model(num_key_value_heads=2).save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    B, prompt, steps = 2, 7, 32
    ids = np.random.default_rng(3).integers(3, 128, size=(B, prompt + steps))
    mask = np.ones_like(ids)
    if left_pad:
        mask[0, :3] = 0
    full = model(ids, attention_mask=mask if left_pad else None).logits
    cache = model.make_cache()
    out = model(ids[:, :prompt], attention_mask=mask[:, :prompt] if left_pad else None, past_key_values=cache)
    pieces = [out.logits]
    for t in range(prompt, prompt + steps):
        step_mask = mask[:, : t + 1] if left_pad else None
        pieces.append(model(ids[:, t : t + 1], attention_mask=step_mask, past_key_values=cache).logits)
    stepped = mx.concatenate(pieces, axis=1)
    valid = mask.astype(bool)
    diff = np.abs(to_np(stepped) - to_np(full))[valid]
    assert diff.max() <= 1e-5
    assert cache[0].offset == prompt + steps


def test_save_pretrained_sharded_loads_in_transformers(tmp_path):
    hf = hf_model(num_key_value_heads=2)
    hf.save_pretrained(tmp_path / "hf")
    ours = LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours", max_shard_size="100KB")
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    ids = torch.tensor(np.random.default_rng(0).integers(3, 128, size=(1, 9)))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, hf(ids).logits)
    again = LlamaForCausalLM.from_pretrained(tmp_path / "ours")
    with torch.no_grad():
        assert rel_err(again(ids.numpy()).logits, hf(ids).logits) <= 1e-4


def test_loading_errors_name_the_tensor(tmp_path):
    hf_model().save_pretrained(tmp_path)
    weights = mx.load(str(tmp_path / "model.safetensors"))
    mx.eval(weights)  # loads are lazy: read everything before the file is rewritten
    config = json.loads((tmp_path / "config.json").read_text())

    def write(ws, cfg=config):
        mx.save_safetensors(str(tmp_path / "model.safetensors"), ws)
        (tmp_path / "config.json").write_text(json.dumps(cfg))

    write({k: v for k, v in weights.items() if k != "model.norm.weight"})
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        LlamaForCausalLM.from_pretrained(tmp_path)
    write({**weights, "model.extra.weight": mx.zeros((2,))})
    with pytest.raises(CheckpointError, match="model.extra.weight"):
        LlamaForCausalLM.from_pretrained(tmp_path)
    write(weights, {**config, "intermediate_size": 96})
    with pytest.raises(CheckpointError, match="mlp.*shape"):
        LlamaForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        LlamaForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a model directory"):
        LlamaForCausalLM.from_pretrained(tmp_path / "nope")


def test_causal_checkpoint_into_classification_head(tmp_path):
    hf_model(pad_token_id=0).save_pretrained(tmp_path)
    with pytest.warns(UserWarning) as record:
        model = LlamaForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    messages = " | ".join(str(w.message) for w in record)
    assert "score.weight" in messages and "newly initialised" in messages
    assert "ignoring tensors of another task head: lm_head.weight" in messages
    assert model(np.array([[5, 6, 7, 0]])).logits.shape == (1, 3)


def test_quantized_checkpoint_loads_with_float32_scales(tmp_path):
    hf_model(num_key_value_heads=2, hidden_size=128, intermediate_size=256).save_pretrained(tmp_path / "hf")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    nn.quantize(model, group_size=64, bits=4)
    model.set_dtype(mx.float16)  # the portable on-disk layout: float16 scales and biases
    model.config.quantization = {"group_size": 64, "bits": 4}
    model.save_pretrained(tmp_path / "q4")
    stored = mx.load(str(tmp_path / "q4" / "model.safetensors"))
    loaded = LlamaForCausalLM.from_pretrained(tmp_path / "q4")
    q_proj = loaded.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, nn.QuantizedLinear)
    assert q_proj.scales.dtype == mx.float32
    # Reference: the same layer dequantized by MLX itself from the stored tensors, run as a float32 matmul.
    name = "model.layers.0.self_attn.q_proj"
    w = mx.dequantize(
        stored[f"{name}.weight"],
        stored[f"{name}.scales"].astype(mx.float32),
        stored[f"{name}.biases"].astype(mx.float32),
        group_size=64,
        bits=4,
    )
    x = mx.random.normal((3, 128))
    assert mx.allclose(q_proj(x), x @ w.T, atol=1e-4).item()
    assert loaded(np.array([[1, 2, 3]])).logits.shape == (1, 3, 128)
    # A prompt-sized input takes the dequantize + GEMM path on the CPU: it must equal MLX's quantized kernel.
    assert isinstance(q_proj, CPUQuantizedLinear)
    prompt = mx.random.normal((2, 20, 128))
    fused = mx.quantized_matmul(
        prompt, q_proj.weight, q_proj.scales, q_proj.biases, transpose=True, group_size=64, bits=4
    )
    assert mx.allclose(q_proj(prompt), fused, atol=1e-4).item()
    ids = np.random.default_rng(0).integers(3, 128, size=(1, 40))
    full = loaded(ids).logits  # 40 rows: GEMM path; one token at a time: the quantized kernel
    cache = loaded.make_cache()
    steps = mx.concatenate([loaded(ids[:, t : t + 1], past_key_values=cache).logits for t in range(40)], axis=1)
    assert mx.allclose(full, steps, atol=1e-4).item()


def test_config_round_trip_with_transformers(tmp_path):
    ref = transformers.LlamaConfig(
        vocab_size=500,
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=32,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "original_max_position_embeddings": 1024,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
        },
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=[2, 3],
        id2label={0: "neg", 1: "pos", 2: "neutral"},
        mlp_bias=True,
        custom_field="kept",
    )
    ours = LlamaConfig.from_dict(ref.to_dict())
    assert ours.num_labels == 3 and ours.extra["custom_field"] == "kept"
    ours.save_pretrained(tmp_path)
    back = transformers.LlamaConfig.from_pretrained(tmp_path)
    skip = {"transformers_version", "_name_or_path"}
    a = {k: v for k, v in back.to_dict().items() if k not in skip}
    b = {k: v for k, v in ref.to_dict().items() if k not in skip}
    assert a == b
    assert LlamaConfig.from_pretrained(tmp_path) == ours


def test_config_defaults_match_transformers():
    ref, ours = transformers.LlamaConfig(), LlamaConfig()
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "hidden_act",
        "max_position_embeddings",
        "initializer_range",
        "rms_norm_eps",
        "use_cache",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "pretraining_tp",
        "tie_word_embeddings",
        "rope_theta",
        "rope_scaling",
        "attention_bias",
        "attention_dropout",
        "mlp_bias",
        "num_labels",
        "problem_type",
    ):
        assert getattr(ours, key) == getattr(ref, key), key
    assert ours.head_dim == ref.head_dim


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"hidden_size": 100, "num_attention_heads": 3}, "hidden_size"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"hidden_act": "swiglu2"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "linear"}}, "factor"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 0.5}}, "factor"),
        ({"rope_scaling": {"rope_type": "unknown", "factor": 2.0}}, "rope_type"),
        ({"rope_scaling": {}}, "rope_type"),
        ({"rope_scaling": {"rope_type": "yarn"}}, "factor"),
        ({"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}}, "short_factor"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"),
        (
            {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "original_max_position_embeddings": 8192,
                    "low_freq_factor": 4.0,
                    "high_freq_factor": 1.0,
                }
            },
            "high_freq_factor",
        ),
        ({"problem_type": "ranking"}, "problem_type"),
    ],
)
def test_invalid_configs_raise_value_error(kwargs, field):
    kwargs = {"hidden_size": 64, "num_attention_heads": 4, **kwargs}
    with pytest.raises(ValueError, match=field):
        LlamaConfig(**kwargs)
    with pytest.raises(ConfigError, match=field):
        LlamaConfig.from_dict(kwargs)


def test_inputs_accept_lists_numpy_and_mlx(tmp_path):
    hf_model().save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    ids = [[5, 9, 17, 3]]
    a = model(ids).logits
    assert mx.array_equal(a, model(np.array(ids)).logits).item()
    assert mx.array_equal(a, model(mx.array(ids)).logits).item()
    assert hf_config().tie_word_embeddings is False
