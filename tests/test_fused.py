"""Load-time q/k/v and gate/up fusion: Transformers' logits, and checkpoints still in Transformers' names."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.compare import rel_err  # noqa: E402
from support.hf_llama import hf_model  # noqa: E402

from mlx_llama.modeling.fused import fuse_projections  # noqa: E402
from mlx_llama.modeling.heads import LlamaForCausalLM  # noqa: E402

IDS = [[1, 5, 9, 33, 70, 2, 8, 100, 64, 3]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    hf = hf_model(num_key_value_heads=2, intermediate_size=128)
    hf.save_pretrained(path)
    return path, hf


def test_fused_model_matches_transformers_and_saves_transformers_names(pair, tmp_path):
    path, hf = pair
    model = fuse_projections(LlamaForCausalLM.from_pretrained(path, dtype="float32"))
    assert "qkv_proj" in model.model.layers[0].self_attn and "q_proj" not in model.model.layers[0].self_attn
    with torch.no_grad():
        ref = hf(torch.tensor(IDS)).logits
    assert rel_err(model(mx.array(IDS)).logits, ref) < 1e-5
    cache = model.make_cache()  # decoding through the cache takes the fused path too
    steps = [model(mx.array([IDS[0][:6]]), past_key_values=cache).logits[0]]
    steps += [model(mx.array([[t]]), past_key_values=cache).logits[0] for t in IDS[0][6:]]
    assert rel_err(mx.concatenate(steps), ref[0]) < 1e-5
    model.save_pretrained(tmp_path)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        assert rel_err(reloaded(torch.tensor(IDS)).logits, ref) < 1e-6


def test_fusing_a_quantized_model_keeps_its_outputs(pair):
    path, _ = pair
    model = LlamaForCausalLM.from_pretrained(path, dtype="float32")
    nn.quantize(model, group_size=32, bits=4, class_predicate=lambda p, m: isinstance(m, nn.Linear) and "layers" in p)
    before = np.array(model(mx.array(IDS)).logits)
    fuse_projections(model)
    assert isinstance(model.model.layers[0].mlp.gate_up_proj, nn.QuantizedLinear)
    assert np.abs(np.array(model(mx.array(IDS)).logits) - before).max() < 1e-4
