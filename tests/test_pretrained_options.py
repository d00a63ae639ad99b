"""from_pretrained options (dtype aliases, "auto", clear errors) and forward-call options vs Transformers."""

from __future__ import annotations

import copy
import json

import mlx.core as mx
import numpy as np
import pytest
import torch
import transformers
from support.compare import rel_err
from support.hf_llama import hf_model

from mlx_llama import LlamaForCausalLM, LlamaModel
from mlx_llama.errors import ConfigError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("opts")
    hf = hf_model(num_key_value_heads=2)
    hf.save_pretrained(path)
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(path / "bf16")
    return path, hf


def test_torch_dtype_alias_and_auto(saved):
    path, _ = saved
    for kw in (dict(torch_dtype="float16"), dict(torch_dtype=torch.float16), dict(dtype=torch.float16)):
        assert LlamaForCausalLM.from_pretrained(path, **kw).model.embed_tokens.weight.dtype == mx.float16
    with pytest.raises(ConfigError, match="torch_dtype"):
        LlamaForCausalLM.from_pretrained(path, dtype="float16", torch_dtype="bfloat16")
    ref = transformers.LlamaForCausalLM.from_pretrained(path / "bf16", dtype="auto")
    assert ref.dtype == torch.bfloat16
    ours = LlamaForCausalLM.from_pretrained(path / "bf16", dtype="auto")
    assert ours.model.layers[0].self_attn.q_proj.weight.dtype == mx.bfloat16
    # Default (None) stays Transformers' float32 load on the CPU.
    assert LlamaForCausalLM.from_pretrained(path / "bf16").model.norm.weight.dtype == mx.float32


@pytest.mark.parametrize(
    "kw,fix",
    [
        (dict(device_map="auto"), "device_map"),
        (dict(load_in_4bit=True), "convert"),
        (dict(load_in_8bit=True), "convert"),
        (dict(quantization_config={"load_in_4bit": True}), "convert"),
        (dict(attn_implementation="flash_attention_2"), "eager"),
    ],
)
def test_impossible_options_are_clear_errors(saved, kw, fix):
    with pytest.raises(ConfigError, match=fix):
        LlamaForCausalLM.from_pretrained(saved[0], **kw)


def test_accepted_options_never_reach_config_json(saved, tmp_path):
    path, hf = saved
    model = LlamaForCausalLM.from_pretrained(
        path, attn_implementation="sdpa", device_map=None, low_cpu_mem_usage=True, load_in_4bit=False
    )
    model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    for key in ("attn_implementation", "device_map", "low_cpu_mem_usage", "load_in_4bit"):
        assert key not in written
    ids = np.random.default_rng(0).integers(3, 128, size=(2, 9))
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    with torch.no_grad():
        assert rel_err(model(ids).logits, back(torch.tensor(ids)).logits) <= 1e-4


def test_call_options_match_transformers(saved):
    path, hf = saved
    ours = LlamaForCausalLM.from_pretrained(path)
    ids = np.random.default_rng(1).integers(3, 128, size=(2, 8))
    with torch.no_grad():
        ref = hf(torch.tensor(ids), return_dict=False, logits_to_keep=1, use_cache=False)
        full = hf(torch.tensor(ids)).logits
    got = ours(ids, return_dict=False, num_logits_to_keep=1, use_cache=False)
    assert isinstance(got, tuple) and len(got) == len(ref) == 1
    assert rel_err(got[0], ref[0]) <= 1e-4
    picked = ours(ids, logits_to_keep=np.array([0, 5])).logits
    assert rel_err(picked, full[:, [0, 5]]) <= 1e-4
    # cache_position continuing the cache: the second half through the cache equals the full forward.
    cache = ours.make_cache()
    ours(ids[:, :5], past_key_values=cache, cache_position=np.arange(5))
    tail = ours(ids[:, 5:], past_key_values=cache, cache_position=np.arange(5, 8)).logits
    assert rel_err(tail, full[:, 5:]) <= 1e-4
    with pytest.raises(ConfigError, match="cache_position"):
        ours(ids[:, :2], past_key_values=cache, cache_position=np.arange(2))
    legacy = tuple((mx.zeros((2, 2, 3, 16)), mx.zeros((2, 2, 3, 16))) for _ in range(2))
    with pytest.raises(ConfigError, match="tuple"):
        ours(ids, past_key_values=legacy)


def test_base_model_return_dict_false(saved):
    path, hf = saved
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = LlamaModel.from_pretrained(path)
    ids = np.random.default_rng(2).integers(3, 128, size=(1, 6))
    with torch.no_grad():
        ref = hf.model(torch.tensor(ids), return_dict=False, use_cache=False)
    got = base(ids, return_dict=False, use_cache=False)
    assert len(got) == len(ref) == 1 and rel_err(got[0], ref[0]) <= 1e-4
