"""Converter round trips, checked against Transformers (the oracle), never against our own writer."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers
from safetensors.numpy import load_file as np_load_file
from safetensors.torch import load_file
from support.compare import rel_err
from support.hf_llama import hf_llama
from support.hf_llama import hf_logits as logits
from support.meta import train_tokenizer, write_meta

import mlx_llama
from mlx_llama.convert import convert, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="module")
def vocab(tokenizer) -> int:
    return spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size()


def _ids(vocab: int, seed: int = 0, shape=(2, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=shape).astype(np.int64)


def _ours(path: Path, ids: np.ndarray) -> np.ndarray:
    model = mlx_llama.LlamaForCausalLM.from_pretrained(path)
    return np.array(model(mx.array(ids)).logits.astype(mx.float32))


def _check_against(ref, out: Path, vocab: int) -> tuple[float, float]:
    """Transformers on the output and our model on the output, both against the reference model."""
    ids = _ids(vocab)
    want = logits(ref, ids)
    theirs = logits(transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation="eager"), ids)
    return rel_err(theirs, want), rel_err(_ours(out, ids), want)


@pytest.mark.parametrize("n_shards", [1, 2, pytest.param(4, marks=pytest.mark.subprocess)])
@pytest.mark.parametrize(
    ("kv_heads", "eps", "context"), [(8, 1e-6, 2048), (4, 1e-5, 4096)], ids=["llama1-mha", "llama2-gqa"]
)
def test_meta_bf16_shards_to_float32(tmp_path, tokenizer, vocab, kv_heads, eps, context, n_shards):
    ref = hf_llama(vocab, kv_heads, seed=n_shards + kv_heads, eps=eps)
    src = write_meta(ref, tmp_path / "meta", n_shards, tokenizer, norm_eps=eps)
    out = tmp_path / "out"
    args = [str(src), str(out), "--dtype", "float32"]
    if n_shards == 4:  # through the real entry point once per attention kind
        proc = subprocess.run([sys.executable, str(ROOT / "convert.py"), *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == f"wrote {out}\n"  # piped: no progress bar
    else:
        assert main([*args, "--quiet"]) == 0
    hf_err, our_err = _check_against(ref, out, vocab)
    assert hf_err == 0.0  # the very same float32 weights in the same implementation
    assert our_err < 1e-4
    config = json.loads((out / "config.json").read_text())
    assert config["intermediate_size"] == 192 and config["num_key_value_heads"] == kv_heads
    assert config["vocab_size"] == vocab and config["max_position_embeddings"] == context
    assert config["rms_norm_eps"] == eps and config["rope_theta"] == 10000.0
    assert not any("rope" in k for k in load_file(out / "model.safetensors"))
    text = "the quick brown fox jumps"
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok(text)["input_ids"] == [1, *sp.encode(text)]
    assert mlx_llama.LlamaTokenizer.from_pretrained(out)(text)["input_ids"] == [1, *sp.encode(text)]


def test_transformers_safetensors_shards(tmp_path, tokenizer, vocab):
    ref = hf_llama(vocab, kv_heads=4, bf16=False, seed=3)
    src = tmp_path / "hf"
    ref.save_pretrained(src, max_shard_size="100KB")
    (src / "tokenizer_config.json").write_text('{"legacy": true}')
    (src / "tokenizer.model").write_bytes(tokenizer.read_bytes())
    assert len(list(src.glob("*.safetensors"))) > 1
    out = tmp_path / "out"
    assert main([str(src), str(out), "--dtype", "float32", "--max-shard-size", "200KB", "--quiet"]) == 0
    hf_err, our_err = _check_against(ref, out, vocab)
    assert hf_err == 0.0 and our_err < 1e-4
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == {p.name for p in shards}
    assert all(p.stat().st_size < 200_000 + 4096 for p in shards)
    assert index["metadata"]["total_size"] == sum(p.numel() * 4 for p in ref.parameters())
    assert (out / "generation_config.json").is_file() and (out / "tokenizer_config.json").is_file()


def test_transformers_bin_bf16(tmp_path, vocab):
    ref = hf_llama(vocab, kv_heads=8, seed=4)  # bf16-representable weights, saved as bf16 .bin shards
    src = tmp_path / "hf"
    copy.deepcopy(ref).to(torch.bfloat16).save_pretrained(src, safe_serialization=False, max_shard_size="100KB")
    assert len(list(src.glob("pytorch_model-*.bin"))) > 1
    out = tmp_path / "out"
    convert(src, out, dtype="float32", quiet=True)
    hf_err, our_err = _check_against(ref, out, vocab)
    assert hf_err == 0.0 and our_err < 1e-4


def test_float16_output_is_bitwise_torch_half(tmp_path, vocab):
    ref = hf_llama(vocab, kv_heads=4, bf16=False, seed=5)
    src = tmp_path / "hf"
    ref.save_pretrained(src)
    out = tmp_path / "out"
    convert(src, out, quiet=True)  # float16 is the default
    got = load_file(out / "model.safetensors")
    want = ref.half().state_dict()
    assert set(got) == set(want)
    for name, tensor in got.items():
        assert tensor.dtype == torch.float16
        assert torch.equal(tensor.view(torch.int16), want[name].view(torch.int16)), name
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"


def test_float16_overflow_names_tensor_and_suggests_bfloat16(tmp_path, vocab, capsys):
    ref = hf_llama(vocab, kv_heads=8, bf16=False, seed=6)
    weight = ref.model.layers[1].mlp.down_proj.weight
    src, out = tmp_path / "hf", tmp_path / "out"
    with torch.no_grad():
        weight[3, 5] = -65519.0  # rounds to float16's largest finite value, -65504
    ref.save_pretrained(src)
    assert main([str(src), str(out), "--quiet"]) == 0
    assert load_file(out / "model.safetensors")["model.layers.1.mlp.down_proj.weight"][3, 5].item() == -65504.0
    with torch.no_grad():
        weight[3, 5] = 65520.0  # the smallest magnitude that rounds to infinity
    ref.save_pretrained(src)
    out = tmp_path / "out2"
    assert main([str(src), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.layers.1.mlp.down_proj.weight" in err and "bfloat16" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]
    assert main([str(src), str(out), "--dtype", "bfloat16", "--quiet"]) == 0


# Measured on this tiny random model (Transformers' default init, 4 x 64 positions, 320-piece vocabulary):
# float16 agrees with float32 on every top-1 token, 8-bit (group 64) on 98.4%, 4-bit (group 64) on 76.6%.
# A random model's logits are nearly tied, so this is a pessimistic figure; thresholds sit just below.
@pytest.mark.parametrize(("bits", "min_agreement"), [(8, 0.97), (4, 0.72)])
def test_quantized_output_loads_generates_and_agrees(tmp_path, vocab, bits, min_agreement):
    ref = hf_llama(vocab, kv_heads=4, bf16=False, seed=7)
    src = tmp_path / "hf"
    ref.save_pretrained(src)
    out = tmp_path / "out"
    assert main([str(src), str(out), "-q", "--q-bits", str(bits), "--q-group-size", "64", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": bits}
    stored = np_load_file(out / "model.safetensors")
    q = stored["model.layers.0.self_attn.q_proj.weight"]
    assert q.dtype == np.uint32 and q.shape == (64, 64 * bits // 32)
    assert stored["model.layers.0.self_attn.q_proj.scales"].dtype == np.float16
    assert stored["model.embed_tokens.weight"].dtype == np.uint32
    assert stored["model.norm.weight"].dtype == np.float16  # norms stay float
    model = mlx_llama.LlamaForCausalLM.from_pretrained(out)
    assert isinstance(model.model.layers[0].mlp.down_proj, nn.QuantizedLinear)
    assert isinstance(model.model.embed_tokens, nn.QuantizedEmbedding)
    ids = _ids(vocab, seed=1, shape=(4, 64))
    agreement = float(np.mean(np.array(model(mx.array(ids)).logits).argmax(-1) == logits(ref, ids).argmax(-1)))
    print(f"{bits}-bit top-1 agreement with float32: {agreement:.3f}")
    assert agreement >= min_agreement
    generated = np.array(model.generate(ids[:1, :8], max_new_tokens=6, do_sample=False))
    assert generated.shape == (1, 14) and (generated[:, :8] == ids[:1, :8]).all()


def test_dequantize_restores_float16_within_one_quantization_step(tmp_path, vocab):
    ref = hf_llama(vocab, kv_heads=4, bf16=False, seed=8)
    src, quant, back = tmp_path / "hf", tmp_path / "q8", tmp_path / "deq"
    ref.save_pretrained(src)
    convert(src, quant, quantize=True, q_bits=8, q_group_size=32, quiet=True)
    assert main([str(quant), str(back), "--dequantize", "--quiet"]) == 0
    config = json.loads((back / "config.json").read_text())
    assert "quantization" not in config and config["torch_dtype"] == "float16"
    got = load_file(back / "model.safetensors")
    assert not any(k.endswith((".scales", ".biases")) for k in got)
    for name, w in ref.state_dict().items():
        assert got[name].dtype == torch.float16 and got[name].shape == w.shape
        if w.ndim == 2:  # one 8-bit step of its 32-wide group (float16 scales and biases shift the grid)
            groups = w.reshape(w.shape[0], -1, 32)
            step = (groups.amax(-1) - groups.amin(-1)) / 255
            err = (got[name].float() - w).abs().reshape(groups.shape).amax(-1)
            assert (err <= step + 1e-3 * groups.abs().amax(-1)).all(), name
    hf_err, _ = _check_against(ref, back, vocab)
    assert hf_err < 0.05


def test_hub_id_from_offline_cache(tmp_path, vocab, monkeypatch):
    import huggingface_hub.constants as constants

    ref = hf_llama(vocab, kv_heads=8, bf16=False, seed=9)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--tiny-llama"
    ref.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    convert("someone/tiny-llama", out, dtype="float32", quiet=True)
    hf_err, _ = _check_against(ref, out, vocab)
    assert hf_err == 0.0
    with pytest.raises(mlx_llama.CheckpointError, match="someone/absent.*offline"):
        convert("someone/absent", tmp_path / "out2", quiet=True)
    assert not (tmp_path / "out2").exists()
