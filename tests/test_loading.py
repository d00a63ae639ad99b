"""`mlx_llama.load`: Transformers and converted (quantized) directories, Hub ids from an offline cache."""

import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.compare import rel_err  # noqa: E402
from support.hf_llama import hf_logits  # noqa: E402

from mlx_llama.errors import CheckpointError, ConfigError  # noqa: E402
from mlx_llama.loading import load, model_class  # noqa: E402
from mlx_llama.modeling.heads import LlamaForCausalLM, LlamaForSequenceClassification  # noqa: E402
from mlx_llama.modeling.llama import LlamaModel  # noqa: E402

TEXT = "The cat sat on a mat."


def test_load_transformers_directory(tiny_checkpoint):
    path, hf = tiny_checkpoint
    model, tokenizer = load(path)
    assert type(model) is LlamaForCausalLM
    ids = tokenizer.encode(TEXT)
    assert ids[0] == 1 and tokenizer.sp_model.decode(ids[1:]) == TEXT
    assert rel_err(np.array(model(mx.array([ids])).logits), hf_logits(hf, [ids])) < 1e-4


def test_load_quantized_converted_directory(tiny_checkpoint, tmp_path):
    from mlx_llama.convert import convert

    path, hf = tiny_checkpoint
    out = convert(path, tmp_path / "q8", dtype="float16", quantize=True, q_bits=8, q_group_size=32, quiet=True)
    model, tokenizer = load(out)
    assert isinstance(model.model.layers[0].mlp.up_proj, nn.QuantizedLinear)
    ids = tokenizer.encode(TEXT)
    # 8-bit weights: logits within quantization error of the float reference.
    assert rel_err(np.array(model(mx.array([ids])).logits.astype(mx.float32)), hf_logits(hf, [ids])) < 0.03
    assert model.generate([ids], max_new_tokens=4).shape == (1, len(ids) + 4)


def lay_out_hub_cache(cache, repo_id, source, commit="0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub writes: refs/main -> commit, snapshots/<commit>/<files>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    return snapshot


def test_load_hub_id_offline_from_local_cache(tiny_checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import constants

    path, hf = tiny_checkpoint
    lay_out_hub_cache(tmp_path, "someone/tiny-llama", path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    model, tokenizer = load("someone/tiny-llama")
    ids = tokenizer.encode(TEXT)
    assert rel_err(np.array(model(mx.array([ids])).logits), hf_logits(hf, [ids])) < 1e-4
    with pytest.raises(CheckpointError, match="someone/missing"):
        load("someone/missing")


def test_missing_paths_give_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such model directory"):
        load(tmp_path / "nope" / "deeper")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load(tmp_path / "file.txt")
    with pytest.raises(ConfigError, match="config.json"):
        load(tmp_path)  # a directory without config.json


def test_class_is_chosen_from_config():
    assert model_class({"architectures": ["LlamaForSequenceClassification"]}) is LlamaForSequenceClassification
    assert model_class({"model_type": "llama"}) is LlamaForCausalLM
    assert model_class({"architectures": ["LlamaModel"], "model_type": "llama"}) is LlamaModel
    assert model_class({"architectures": ["SomethingElse"], "model_type": "llama"}) is LlamaForCausalLM
    with pytest.raises(ConfigError, match="GPT2LMHeadModel"):
        model_class({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    with pytest.raises(ConfigError, match="model_type"):
        model_class({"model_type": "mistral"})


def test_sequence_classification_checkpoint_loads_its_class(tiny_checkpoint, tmp_path):
    path, _ = tiny_checkpoint
    target = tmp_path / "cls"
    shutil.copytree(path, target)
    config = json.loads((target / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    config["pad_token_id"] = 0
    (target / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning):  # the checkpoint has lm_head but no score head
        model, _ = load(target)
    assert type(model) is LlamaForSequenceClassification
