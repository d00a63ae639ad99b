"""The converter on hostile or inconsistent sources: exit status 2, one line naming the file / field / tensor,
no output directory (nor partial one) left, the source untouched; and it never writes what the loader rejects."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.hf_llama import hf_llama
from support.hostile_files import build, i, s, state_dict, storage, tensor, torch_zip
from support.meta import write_meta

import mlx_llama.convert as convert_module
from mlx_llama.convert import main

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 96


@pytest.fixture(scope="module")
def model():
    return hf_llama(VOCAB, kv_heads=4, seed=21, bf16=False)


@pytest.fixture
def hf(tmp_path, model) -> Path:
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


@pytest.fixture
def meta(tmp_path, model) -> Path:
    return write_meta(model, tmp_path / "meta", 2, tokenizer=None, norm_eps=1e-5)


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def _fails(capsys, tmp_path: Path, source: Path, *extra: str, names: str, out: Path | None = None) -> str:
    out = out or tmp_path / "out"
    existed = out.exists()
    before = _digest(source)
    status = main([str(source), str(out), "--quiet", *extra])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert names in err, err
    assert out.exists() == existed
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]
    assert _digest(source) == before
    return err


def _edit_weights(hf: Path, change) -> None:
    weights = load_file(hf / "model.safetensors")
    change(weights)
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})


def _edit_config(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# ---- weights the loader would reject -----------------------------------------------------------------------
def test_nan_cannot_hide_a_float16_overflow(capsys, tmp_path, hf):
    def poison(w):
        w["model.layers.0.mlp.up_proj.weight"][0, :2] = torch.tensor([float("nan"), 1e6])

    _edit_weights(hf, poison)
    _fails(capsys, tmp_path, hf, names="model.layers.0.mlp.up_proj.weight: 1 NaN and 0 infinite values")
    err = _fails(capsys, tmp_path, hf, "--allow-nonfinite", names="model.layers.0.mlp.up_proj.weight")
    assert "overflow float16" in err and "1e+06" in err


def test_nan_and_inf_weights_are_reported(capsys, tmp_path, hf):
    def poison(w):
        w["model.norm.weight"][3] = float("inf")

    _edit_weights(hf, poison)
    _fails(capsys, tmp_path, hf, "--dtype", "float32", names="model.norm.weight: 0 NaN and 1 infinite values")
    assert main([str(hf), str(tmp_path / "out"), "--quiet", "--allow-nonfinite", "--dtype", "float32"]) == 0
    assert torch.isinf(load_file(tmp_path / "out" / "model.safetensors")["model.norm.weight"][3])


@pytest.mark.parametrize(
    "change, names",
    [
        (lambda w: w.pop("model.layers.1.mlp.down_proj.weight"), "missing tensor(s) model.layers.1.mlp.down_proj"),
        (lambda w: w.update(extra=torch.zeros(3)), "unexpected tensor(s) extra"),
        (lambda w: w.update({"model.norm.weight": torch.ones(63)}), "tensor model.norm.weight has shape (63,)"),
        (lambda w: w.update({"model.embed_tokens.weight": torch.zeros(0, 64)}), "model.embed_tokens.weight"),
        (lambda w: w.update({"model.layers.2.input_layernorm.weight": torch.ones(64)}), "weights hold 3 layers"),
        (lambda w: w.update({"model.norm.weight": torch.ones(64, dtype=torch.int32)}), "norm.weight: dtype int32"),
    ],
)
def test_tensors_that_do_not_fit_the_config(capsys, tmp_path, hf, change, names):
    _edit_weights(hf, change)
    err = _fails(capsys, tmp_path, hf, names=names)
    assert "the converted model would not load" in err or "floating point" in err


@pytest.mark.parametrize(
    "field, value, names",
    [
        ("num_hidden_layers", 1000000, "`num_hidden_layers` must be a positive integer up to"),
        ("num_hidden_layers", 3, "num_hidden_layers is 3, but the weights hold 2 layers"),
        ("hidden_size", "64", "`hidden_size` must be a positive integer"),
        ("rope_scaling", "linear", "`rope_scaling` must be an object or null"),
        ("rope_theta", 0, "`rope_theta` must be a positive number"),
        ("max_position_embeddings", -1, "`max_position_embeddings` must be a positive integer"),
        ("quantization", {"bits": 4}, "config field `quantization` must give group_size in (32, 64, 128)"),
    ],
)
def test_bad_config_json(capsys, tmp_path, hf, field, value, names):
    _edit_config(hf / "config.json", **{field: value})
    _fails(capsys, tmp_path, hf, names=names)


def test_bad_dequantize_block(capsys, tmp_path, hf):
    _edit_config(hf / "config.json", quantization={"group_size": 7, "bits": "4"})
    _fails(capsys, tmp_path, hf, "--dequantize", names="`quantization` must give group_size")


# ---- Meta checkpoints ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, names",
    [
        ("dim", "abc", "field 'dim' must be a positive integer, got 'abc'"),
        ("n_heads", 0, "field 'n_heads' must be a positive integer, got 0"),
        ("multiple_of", 0, "field 'multiple_of' must be a positive integer, got 0"),
        ("n_layers", -1, "field 'n_layers' must be a positive integer, got -1"),
        ("n_layers", 1, "model.layers.1.input_layernorm.weight is not expected with n_layers 1"),
        ("n_layers", 3, "model.layers.2.self_attn.q_proj.weight is missing (params.json has n_layers 3)"),
        ("norm_eps", "tiny", "field 'norm_eps' must be a positive number"),
        ("vocab_size", 10**9, "field 'vocab_size' must be -1 or a positive integer"),
    ],
)
def test_bad_params_json(capsys, tmp_path, meta, field, value, names):
    _edit_config(meta / "params.json", **{field: value})
    _fails(capsys, tmp_path, meta, names=names)


def test_missing_middle_meta_shard(capsys, tmp_path, model):
    src = write_meta(model, tmp_path / "meta", 4, tokenizer=None, norm_eps=1e-5)
    (src / "consolidated.01.pth").unlink()
    (src / "consolidated.03.pth").unlink()
    _fails(capsys, tmp_path, src, names="consolidated.01.pth is missing (found consolidated.02.pth)")


# ---- hostile files inside a source -----------------------------------------------------------------------
def test_pickle_build_cannot_copy_a_local_file_into_the_output(capsys, tmp_path, hf):
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2 " * 64)
    (hf / "model.safetensors").unlink()
    hijacked = build(storage(numel=4), {"path": s(str(secret)), "numel": i(256), "data_offset": i(0)})
    torch_zip(hf / "pytorch_model.bin", state_dict({"model.norm.weight": tensor(hijacked, size=(64,))}))
    _fails(capsys, tmp_path, hf, names="pytorch_model.bin: the pickle tries to modify a storage")
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("shard", ["../outside.bin", "/etc/passwd"])
def test_index_pointing_outside_the_source(capsys, tmp_path, model, shard):
    src = tmp_path / "hf"
    model.save_pretrained(src, safe_serialization=False)
    (tmp_path / "outside.bin").write_bytes((src / "pytorch_model.bin").read_bytes())
    index = {"weight_map": {"model.norm.weight": shard}}
    (src / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    _fails(capsys, tmp_path, src, names=f"weight_map: file name '{shard}' points outside")


def test_tokenizer_symlink_out_of_the_source_is_not_copied(capsys, tmp_path, hf):
    (tmp_path / "id_rsa").write_text("PRIVATE KEY")
    os.symlink(tmp_path / "id_rsa", hf / "tokenizer.model")
    _fails(capsys, tmp_path, hf, names="tokenizer.model is a link to")


# ---- arguments and the output directory ------------------------------------------------------------------
def test_bad_arguments_and_outputs(capsys, tmp_path, hf):
    _fails(capsys, tmp_path, hf, "--max-shard-size", "1e400GB", names="--max-shard-size: invalid shard size '1e400GB'")
    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    _fails(capsys, tmp_path, hf, names="afile is not a directory", out=blocker / "out")
    _fails(capsys, tmp_path, hf, "--force", names="not a directory; --force replaces only", out=blocker)
    assert blocker.read_text() == "keep"
    odd = tmp_path / "odd"
    (odd / "sub").mkdir(parents=True)
    (odd / "config.json").write_text("{}")
    _fails(capsys, tmp_path, hf, "--force", names="holds other things", out=odd)
    assert (odd / "sub").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_parent(capsys, tmp_path, hf):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        _fails(capsys, tmp_path, hf, names="is not writable", out=parent / "out")
    finally:
        parent.chmod(0o755)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_signals_remove_the_partial_output(capsys, tmp_path, hf, monkeypatch, how):
    run_job = convert_module._run_job
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:  # mid-way: some shards written already
            os.kill(os.getpid(), getattr(signal, how))
        return run_job(*args)

    monkeypatch.setattr(convert_module, "_run_job", interrupted)
    out = tmp_path / "deep" / "out"
    status = main([str(hf), str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == (143 if how == "SIGTERM" else 130)
    assert err == f"error: {'terminated' if how == 'SIGTERM' else 'interrupted'}; nothing was written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no out, no .partial, no created parent
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_command_line_has_no_traceback(tmp_path, hf):
    _edit_config(hf / "config.json", id2label=["a", "b"])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "convert.py"), str(hf), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "`id2label` must be an object or null" in proc.stderr and not (tmp_path / "out").exists()
