"""Bad input: a one-line error naming the file, exit status 2, and nothing left at OUTPUT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.hf_llama import hf_llama
from support.meta import write_meta

from mlx_llama.convert import main

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 96


class _RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def model():
    return hf_llama(VOCAB, kv_heads=4, seed=11)


@pytest.fixture
def meta(tmp_path, model) -> Path:
    return write_meta(model, tmp_path / "meta", 2, tokenizer=None, norm_eps=1e-5)


@pytest.fixture
def hf(tmp_path, model) -> Path:
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _fails(capsys, tmp_path: Path, source: Path | str, *extra: str, names: str) -> str:
    out = tmp_path / "out"
    assert main([str(source), str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert names in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    return err


def test_missing_params_json(capsys, tmp_path, meta):
    (meta / "params.json").unlink()
    _fails(capsys, tmp_path, meta, names="params.json")


def test_missing_config_json(capsys, tmp_path, hf):
    (hf / "config.json").unlink()
    _fails(capsys, tmp_path, hf, names="config.json")


def test_empty_and_missing_source(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(capsys, tmp_path, tmp_path / "empty", names=f"{tmp_path / 'empty'}: the directory is empty")
    _fails(capsys, tmp_path, tmp_path / "nowhere", names=f"{tmp_path / 'nowhere'}: no such file or directory")


def test_truncated_meta_shard(capsys, tmp_path, meta):
    shard = meta / "consolidated.01.pth"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    _fails(capsys, tmp_path, meta, names="consolidated.01.pth")


def test_truncated_safetensors(capsys, tmp_path, hf):
    weights = hf / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    _fails(capsys, tmp_path, hf, names="model.safetensors")


def test_corrupt_meta_shard(capsys, tmp_path, meta):
    (meta / "consolidated.00.pth").write_bytes(os.urandom(20000))
    _fails(capsys, tmp_path, meta, names="consolidated.00.pth")


def test_shards_whose_shapes_disagree(capsys, tmp_path, meta):
    shard = meta / "consolidated.01.pth"
    tensors = torch.load(shard, weights_only=True)
    tensors["layers.1.attention.wq.weight"] = tensors["layers.1.attention.wq.weight"][:-8]
    torch.save(tensors, shard)
    err = _fails(capsys, tmp_path, meta, names="consolidated.01.pth")
    assert "layers.1.attention.wq.weight" in err


def test_unsupported_architecture(capsys, tmp_path, hf):
    config = json.loads((hf / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (hf / "config.json").write_text(json.dumps(config))
    err = _fails(capsys, tmp_path, hf, names="config.json")
    assert "mistral" in err


def test_forbidden_pickle_global_is_never_run(capsys, tmp_path, model):
    src = tmp_path / "hf"
    model.save_pretrained(src, safe_serialization=False)
    marker = tmp_path / "pwned"
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["payload"] = _RunsCommand(f"touch {marker}")
    torch.save(state, src / "pytorch_model.bin")
    err = _fails(capsys, tmp_path, src, names="pytorch_model.bin")
    assert "system" in err and not marker.exists()


def test_unknown_dtype(capsys, tmp_path, hf):
    _fails(capsys, tmp_path, hf, "--dtype", "float8", names="--dtype")


def test_existing_output_needs_force(capsys, tmp_path, hf):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(hf), str(out), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    # --force replaces only an empty directory or a model output, never a directory of other files
    assert main([str(hf), str(out), "--quiet", "--force"]) == 2
    assert "holds other things" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert main([str(hf), str(out), "--quiet", "--force"]) == 0
    (out / "model.safetensors").write_bytes(b"stale")
    assert main([str(hf), str(out), "--quiet", "--force"]) == 0  # a model output is replaced
    assert (out / "model.safetensors").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]
    assert main([str(hf), str(hf), "--force", "--quiet"]) == 2  # never replace the source itself
    assert (hf / "model.safetensors").is_file()


@pytest.mark.subprocess
def test_command_line_prints_one_line_without_traceback(tmp_path, meta):
    (meta / "params.json").write_text("{not json")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "convert.py"), str(meta), str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "params.json" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
