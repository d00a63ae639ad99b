"""The CPU backend's layouts (modeling/cpu_linear.py) change where bytes sit and which thread multiplies them,
never the numbers: checked against NumPy in float64, against MLX's own single-stream kernels bit for bit, and
against Transformers through a saved and reloaded checkpoint."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten
from support.hf_llama import hf_model

import mlx_llama
from mlx_llama.modeling import cpu_linear
from mlx_llama.modeling.cpu_linear import CPUQuantizedLinear, Linear, use_input_major_layout

pytestmark = pytest.mark.skipif(mx.default_device().type != mx.cpu, reason="CPU backend only")


def _strides(w: mx.array) -> tuple[int, ...]:
    return np.array(w, copy=False).strides


@pytest.mark.parametrize("blas_transpose", [True, False])
def test_input_major_weights_keep_shape_and_values(monkeypatch, blas_transpose):
    """Both transposes (the BLAS's omatcopy, NumPy tiles) store [in, out] and read back the same [out, in]
    values; products equal NumPy's float64 ones to float32 rounding."""
    if not blas_transpose:
        monkeypatch.setattr(cpu_linear, "_omatcopy", lambda: None)
    layer = Linear(300, 517, bias=True)  # odd sizes: tiles and thread halves that do not divide
    before = np.array(layer.weight)
    assert use_input_major_layout(layer) == 1
    w = layer.weight
    assert w.shape == (517, 300) and _strides(w) == (4, 517 * 4)
    np.testing.assert_array_equal(np.array(w), before)
    x = np.random.default_rng(0).standard_normal((3, 300)).astype(np.float32)
    expected = x.astype(np.float64) @ before.T.astype(np.float64) + np.array(layer.bias)
    np.testing.assert_allclose(np.array(layer(mx.array(x))), expected, rtol=1e-5, atol=1e-5)
    assert use_input_major_layout(layer) == 0  # already input-major: left alone


def test_the_layout_is_off_with_the_environment_switch(monkeypatch):
    monkeypatch.setenv("MLX_LLAMA_CPU_LAYOUT", "0")
    layer = Linear(64, 256)
    assert use_input_major_layout(layer) == 0 and _strides(layer.weight) == (64 * 4, 4)


def test_loaded_model_is_input_major_and_saves_the_checkpoints_tensors(tmp_path):
    """from_pretrained stores float32 weights input-major; logits equal Transformers'; save_pretrained writes
    the very tensors it read (as [out, in])."""
    hf = hf_model(tie_word_embeddings=True)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    q = model.model.layers[0].self_attn.q_proj.weight
    assert _strides(q) == (4, q.shape[0] * 4)
    emb = model.model.embed_tokens.weight  # tied: it is the output layer too
    assert _strides(emb) == (4, emb.shape[0] * 4)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        expected = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.array(model(mx.array(ids)).logits), expected, rtol=1e-4, atol=1e-4)
    model.save_pretrained(tmp_path / "out")
    original = mx.load(str(tmp_path / "hf" / "model.safetensors"))
    saved = mx.load(str(tmp_path / "out" / "model.safetensors"))
    for name, value in original.items():
        np.testing.assert_array_equal(np.array(saved[name]), np.array(value), err_msg=name)


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_half_precision_products_split_over_streams_are_bit_identical(dtype):
    """The split product equals MLX's one-stream matmul bit for bit and NumPy's float64 one to rounding."""
    layer = Linear(256, 777, bias=True)
    layer.set_dtype(dtype)
    x = mx.random.normal((2, 5, 256)).astype(dtype)
    assert len(cpu_linear._parts(777)) >= min(2, len(cpu_linear._parts(10**6)))
    y = layer(x)
    single = mx.matmul(x, layer.weight.T) + layer.bias
    assert y.dtype == dtype and mx.array_equal(y, single).item()
    f64 = np.array(x.astype(mx.float32)).astype(np.float64) @ np.array(layer.weight.astype(mx.float32)).T
    np.testing.assert_allclose(np.array(y.astype(mx.float32)), f64 + np.array(layer.bias.astype(mx.float32)), atol=0.1)


@pytest.mark.parametrize("rows", [1, 3, 40])
def test_quantized_products_on_the_cpu_equal_the_dequantized_weights(rows):
    """Decode rows (split quantized kernel) and prompt rows (dequantize + GEMM) both equal NumPy's product with
    the dequantized weight, and the split kernel equals MLX's one-stream kernel bit for bit."""
    layer = Linear(256, 640, bias=True).to_quantized(group_size=64, bits=4)
    assert isinstance(layer, CPUQuantizedLinear)
    x = mx.random.normal((rows, 256))
    w = mx.dequantize(layer.weight, layer.scales, layer.biases, 64, 4)
    np.testing.assert_allclose(
        np.array(layer(x)),
        np.array(x).astype(np.float64) @ np.array(w).T.astype(np.float64) + np.array(layer.bias),
        rtol=1e-4,
        atol=1e-4,
    )
    if rows < cpu_linear.GEMM_MIN_ROWS:
        one = mx.quantized_matmul(x, layer.weight, layer.scales, layer.biases, transpose=True, group_size=64, bits=4)
        assert mx.array_equal(layer(x), one + layer.bias).item()


def test_nn_quantize_of_a_model_gives_the_cpu_layers():
    model = mlx_llama.LlamaForCausalLM(
        mlx_llama.LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4
        )
    )
    nn.quantize(model, group_size=32, bits=4)
    kinds = {type(m) for name, m in model.named_modules() if name.endswith("_proj")}
    assert kinds == {CPUQuantizedLinear}
    assert all(k.endswith(("weight", "scales", "biases")) for k, _ in tree_flatten(model.parameters()))


@pytest.mark.parametrize("stored", ["float32", "bfloat16", "float16"])
def test_checkpoint_weights_are_read_straight_into_input_major_float32(tmp_path, stored):
    """read_linear_weights takes the Linear weights (and, tied, the embedding) of a checkpoint to be computed in
    float32: torch's own float32 values of the stored tensors, stored [in, out]; other tensors are left alone."""
    from mlx_llama.checkpoint.safetensors_io import load_safetensors
    from mlx_llama.modeling.cpu_linear import read_linear_weights

    hf = hf_model(tie_word_embeddings=True).to(getattr(torch, stored))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    expected = {k: v.float().numpy() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    weights = load_safetensors(tmp_path)
    count = read_linear_weights(tmp_path, weights, tied=True)
    linear = {k for k in expected if k.endswith(("_proj.weight", "embed_tokens.weight"))}
    assert count == len(linear) > 0
    for name, value in weights.items():
        if name in linear:
            assert value.dtype == mx.float32 and _strides(value) == (4, value.shape[0] * 4), name
        else:
            assert value.dtype == getattr(mx, stored), name
        np.testing.assert_array_equal(np.array(value.astype(mx.float32)), expected[name], err_msg=name)
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path)  # the same path inside from_pretrained
    q = model.model.layers[0].self_attn.q_proj.weight
    assert q.dtype == mx.float32 and _strides(q) == (4, q.shape[0] * 4)
