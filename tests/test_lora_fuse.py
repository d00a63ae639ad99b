"""`mlx-llama fuse` against PEFT's merge_and_unload (the oracle), loaded back in Transformers."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
import torch
import transformers
from support.lora import outputs, peft_model, save_base, token_ids

import mlx_llama
from mlx_llama.cli import main


def safetensors_dtypes(directory) -> set[str]:
    header = (directory / "model.safetensors").read_bytes()
    n = int.from_bytes(header[:8], "little")
    meta = json.loads(header[8 : 8 + n])
    return {v["dtype"] for k, v in meta.items() if k != "__metadata__"}


def load_hf(cls_name: str, path):
    """Transformers loads the fused directory with nothing missing or unexpected."""
    model, info = getattr(transformers, cls_name).from_pretrained(path, output_loading_info=True, dtype=torch.float32)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize(
    "cls_name,use_dora",
    [("LlamaForCausalLM", False), ("LlamaForCausalLM", True), ("LlamaForSequenceClassification", True)],
)
def test_fuse_equals_peft_merge_and_unload(tmp_path, cls_name, use_dora):
    base = save_base(tmp_path / "base", cls_name)
    peft_m = peft_model(base, cls_name, use_dora, targets=("q_proj", "k_proj", "o_proj", "up_proj"))
    peft_m.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor(token_ids())
    with torch.no_grad():
        expected = outputs(peft_m.merge_and_unload()(input_ids=ids))
    assert (
        main(
            [
                "fuse",
                "--model",
                str(tmp_path / "base"),
                "--adapter-path",
                str(tmp_path / "adapter"),
                "--save-path",
                str(tmp_path / "fused"),
            ]
        )
        == 0
    )
    assert safetensors_dtypes(tmp_path / "fused") == {"F32"}
    with torch.no_grad():
        got = outputs(load_hf(cls_name, tmp_path / "fused")(input_ids=ids))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "fused" / "tokenizer.model").is_file()


def test_fuse_keeps_the_base_dtype_unless_asked(tmp_path):
    base = save_base(tmp_path / "base").half()
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    peft_model(base.float(), "LlamaForCausalLM", use_dora=False).save_pretrained(tmp_path / "adapter")
    args = ["fuse", "--model", str(tmp_path / "base"), "--adapter-path", str(tmp_path / "adapter")]
    assert main([*args, "--save-path", str(tmp_path / "f16")]) == 0
    assert safetensors_dtypes(tmp_path / "f16") == {"F16"}
    assert main([*args, "--save-path", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    assert safetensors_dtypes(tmp_path / "bf16") == {"BF16"}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_fuse_quantized_base(tmp_path):
    """A 4-bit base: --dequantize writes float weights Transformers loads, with the adapted model's outputs;
    without it the fused model stays 4-bit."""
    base = save_base(tmp_path / "base")
    mlx_llama.convert_checkpoint(
        tmp_path / "base", tmp_path / "q4", dtype="float32", quantize=True, q_bits=4, q_group_size=32
    )
    peft_model(base, "LlamaForCausalLM", use_dora=True).save_pretrained(tmp_path / "adapter")
    args = ["fuse", "--model", str(tmp_path / "q4"), "--adapter-path", str(tmp_path / "adapter")]
    assert main([*args, "--save-path", str(tmp_path / "dense"), "--dequantize"]) == 0
    assert "quantization" not in json.loads((tmp_path / "dense" / "config.json").read_text())
    ids = token_ids()
    adapted, _ = mlx_llama.load(tmp_path / "q4", adapter_path=tmp_path / "adapter")
    expected = np.array(adapted(mx.array(ids)).logits)
    with torch.no_grad():
        got = load_hf("LlamaForCausalLM", tmp_path / "dense")(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert main([*args, "--save-path", str(tmp_path / "q4fused")]) == 0
    assert json.loads((tmp_path / "q4fused" / "config.json").read_text())["quantization"]["bits"] == 4
    requantized, _ = mlx_llama.load(tmp_path / "q4fused")
    assert np.abs(np.array(requantized(mx.array(ids)).logits) - expected).max() < 0.5  # re-quantization error only
