"""LoRA/DoRA adapters against PEFT (the oracle): PEFT's adapters load here with the same outputs for every head,
and the key names and layout are PEFT's own."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file
from support.lora import TASKS, outputs, peft_model, save_base, token_ids

import mlx_llama
from mlx_llama.errors import CheckpointError

HEADS = list(TASKS)


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("cls_name", HEADS)
def test_peft_adapter_loads_with_the_same_outputs(tmp_path, cls_name, use_dora):
    base = save_base(tmp_path / "base", cls_name)
    peft_m = peft_model(base, cls_name, use_dora)
    peft_m.save_pretrained(tmp_path / "adapter")
    ids = token_ids()
    with torch.no_grad():
        expected = outputs(peft_m(input_ids=torch.tensor(ids)))
    model = getattr(mlx_llama, cls_name).from_pretrained(tmp_path / "base")
    model.load_adapter(tmp_path / "adapter")
    got = outputs(model(mx.array(ids)))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # ...and the adapter is not a no-op: the base alone differs.
    plain = outputs(getattr(mlx_llama, cls_name).from_pretrained(tmp_path / "base")(mx.array(ids)))
    assert np.abs(plain - expected).max() > 1e-2


def test_load_with_adapter_picks_the_task_head(tmp_path):
    """mlx_llama.load(base, adapter_path=...) on a causal-LM checkpoint builds the adapter's head (SEQ_CLS here),
    as PEFT's AutoPeftModelForSequenceClassification does; the head comes from the adapter file."""
    save_base(tmp_path / "base", "LlamaForCausalLM")
    base = transformers.LlamaForSequenceClassification.from_pretrained(tmp_path / "base").eval()  # new score
    peft_m = peft_model(base, "LlamaForSequenceClassification", use_dora=False)
    peft_m.save_pretrained(tmp_path / "adapter")
    ids = token_ids()
    with torch.no_grad():
        expected = peft_m(input_ids=torch.tensor(ids)).logits.numpy()
    with pytest.warns(UserWarning, match="score.weight not in the checkpoint"):
        model, tok = mlx_llama.load(tmp_path / "base", adapter_path=tmp_path / "adapter")
    assert type(model).__name__ == "LlamaForSequenceClassification"
    np.testing.assert_allclose(np.array(model(mx.array(ids)).logits), expected, atol=1e-4, rtol=1e-4)


def test_peft_key_names_and_layout(tmp_path):
    """The names PEFT writes are the names we read: a renamed key is an error, not a silent no-op."""
    base = save_base(tmp_path / "base")
    peft_model(base, "LlamaForCausalLM", use_dora=True, targets=("q_proj",)).save_pretrained(tmp_path / "adapter")
    keys = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert keys["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, 64)  # [r, in]
    assert keys["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].shape == (64, 4)  # [out, r]
    assert keys["base_model.model.model.layers.1.self_attn.q_proj.lora_magnitude_vector"].shape == (64,)
    renamed = {k.replace("lora_B", "lora_b"): v for k, v in keys.items()}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text((tmp_path / "adapter" / "adapter_config.json").read_text())
    from safetensors.torch import save_file

    save_file(renamed, bad / "adapter_model.safetensors")
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    with pytest.raises(CheckpointError, match="lora_b.*match no parameter"):
        model.load_adapter(bad)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    cfg["peft_type"] = "IA3"
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(mlx_llama.MlxLlamaError, match="peft_type 'IA3'"):
        mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "base").load_adapter(bad)


def test_peft_adapter_with_trained_biases(tmp_path):
    """bias='all': PEFT saves every bias (wrapped ones as `...q_proj.base_layer.bias`); they load here."""
    base = save_base(tmp_path / "base", attention_bias=True)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], bias="all", init_lora_weights=False
    )
    peft_m = peft.get_peft_model(base, config)
    with torch.no_grad():
        for name, p in peft_m.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn_like(p))
    peft_m.save_pretrained(tmp_path / "adapter")
    keys = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert "base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias" in keys
    assert "base_model.model.model.layers.0.self_attn.k_proj.bias" in keys
    ids = token_ids()
    with torch.no_grad():
        expected = peft_m.eval()(input_ids=torch.tensor(ids)).logits.numpy()
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    model.load_adapter(tmp_path / "adapter")
    np.testing.assert_allclose(np.array(model(mx.array(ids)).logits), expected, atol=1e-4, rtol=1e-4)
