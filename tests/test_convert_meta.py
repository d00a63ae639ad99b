"""Meta layout facts (sizes, names, versions, shard order) against published values, and source resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.hf_llama import hf_llama
from support.meta import write_meta

from mlx_llama.checkpoint import hub
from mlx_llama.checkpoint.meta import MetaCheckpoint, detect_version, find_shards, hf_name, intermediate_size
from mlx_llama.errors import CheckpointError, ConversionError


# (dim, multiple_of, ffn_dim_multiplier) -> the FFN width of the released checkpoints
@pytest.mark.parametrize(
    ("dim", "multiple_of", "mult", "expected"),
    [
        (4096, 256, None, 11008),  # 7B
        (5120, 256, None, 13824),  # 13B
        (6656, 256, None, 17920),  # 30B (33B)
        (8192, 256, None, 22016),  # 65B
        (8192, 4096, 1.3, 28672),  # Llama 2 70B
        (4096, 1024, 1.3, 14336),  # Llama 3 8B
        (2048, 256, 1.5, 8192),  # Llama 3.2 1B
        (16384, 4096, 1.2, 53248),  # 405B
    ],
)
def test_intermediate_size_matches_released_models(dim, multiple_of, mult, expected):
    assert intermediate_size(dim, multiple_of, mult) == expected


def test_weight_names_and_shard_axes():
    assert hf_name("tok_embeddings.weight") == ("model.embed_tokens.weight", 1)
    assert hf_name("output.weight") == ("lm_head.weight", 0)
    assert hf_name("norm.weight") == ("model.norm.weight", None)
    assert hf_name("layers.12.attention.wq.weight") == ("model.layers.12.self_attn.q_proj.weight", 0)
    assert hf_name("layers.3.attention.wo.weight") == ("model.layers.3.self_attn.o_proj.weight", 1)
    assert hf_name("layers.3.feed_forward.w1.weight") == ("model.layers.3.mlp.gate_proj.weight", 0)
    assert hf_name("layers.3.feed_forward.w2.weight") == ("model.layers.3.mlp.down_proj.weight", 1)
    assert hf_name("layers.3.feed_forward.w3.weight") == ("model.layers.3.mlp.up_proj.weight", 0)
    assert hf_name("layers.0.attention_norm.weight") == ("model.layers.0.input_layernorm.weight", None)
    assert hf_name("layers.0.ffn_norm.weight") == ("model.layers.0.post_attention_layernorm.weight", None)
    assert hf_name("rope.freqs") is None
    with pytest.raises(ConversionError, match="layers.0.attention.wz.weight"):
        hf_name("layers.0.attention.wz.weight")


def test_version_detection(tmp_path):
    where = tmp_path / "params.json"
    assert detect_version({"norm_eps": 1e-6}, None, where) == "1"
    assert detect_version({"norm_eps": 1e-5}, None, where) == "2"
    assert detect_version({"norm_eps": 1e-6, "n_kv_heads": 8}, None, where) == "2"
    assert detect_version({"norm_eps": 3e-6}, "1", where) == "1"
    with pytest.raises(ConversionError, match="--llama-version"):
        detect_version({"norm_eps": 3e-6}, None, where)
    llama3 = {"norm_eps": 1e-5, "vocab_size": 128256, "rope_theta": 500000.0}
    assert detect_version(llama3, None, where) == "3"
    assert detect_version({**llama3, "use_scaled_rope": True}, None, where) == "3.1"
    assert detect_version({**llama3, "use_scaled_rope": True}, "3.2", where) == "3.2"


def test_shards_sorted_by_number_not_by_directory_order(tmp_path):
    for n in (10, 2, 0, 1, 11, 9, 3, 4, 5, 6, 7, 8):
        (tmp_path / f"consolidated.{n:02d}.pth").touch()
    (tmp_path / "consolidated.extra.pth").touch()
    assert [int(p.name[13:15]) for p in find_shards(tmp_path)] == list(range(12))


def test_codellama_rope_theta_and_params_wrapped_in_model(tmp_path):
    model = hf_llama(64, kv_heads=8, seed=2)
    src = write_meta(model, tmp_path / "meta", 1, tokenizer=None, norm_eps=1e-5)
    params = json.loads((src / "params.json").read_text())
    (src / "params.json").write_text(json.dumps({"model": {**params, "rope_theta": 1e6}}))
    config = MetaCheckpoint(src).config
    assert config["rope_theta"] == 1e6 and config["max_position_embeddings"] == 16384
    assert config["vocab_size"] == 64  # params say -1 and there is no tokenizer: the embedding decides


def test_params_that_disagree_with_the_weights(tmp_path):
    model = hf_llama(64, kv_heads=8, seed=2)
    src = write_meta(model, tmp_path / "meta", 2, tokenizer=None, norm_eps=1e-5)
    params = json.loads((src / "params.json").read_text())
    (src / "params.json").write_text(json.dumps({**params, "multiple_of": 256}))  # FFN would be 256 wide
    with pytest.raises(CheckpointError, match="gate_proj"):
        MetaCheckpoint(src)


def test_local_sources_and_repo_ids(tmp_path):
    assert hub.resolve_source(tmp_path) == tmp_path
    with pytest.raises(CheckpointError, match="--revision"):
        hub.resolve_source(tmp_path, revision="main")
    assert hub.looks_like_repo_id("meta-llama/Llama-2-7b-hf")
    assert not hub.looks_like_repo_id("/abs/path") and not hub.looks_like_repo_id("./rel/dir")
    assert not hub.looks_like_repo_id("../up/dir") and not hub.looks_like_repo_id("a/b/c")
    with pytest.raises(CheckpointError, match="no such file or directory"):
        hub.resolve_source(Path(tmp_path / "missing"))
