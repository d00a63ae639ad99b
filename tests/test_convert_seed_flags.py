"""`convert.py` accepts the flags of Transformers' convert_llama_weights_to_hf.py, as the seed pages use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from support.compare import rel_err
from support.hf_llama import hf_llama
from support.hf_llama import hf_logits as logits
from support.meta import train_tokenizer, write_meta

from mlx_llama import LlamaForCausalLM
from mlx_llama.convert import main

ROOT = Path(__file__).resolve().parents[1]


def test_seed_command_as_written(tmp_path):
    tok = train_tokenizer(tmp_path / "tok")
    hf = hf_llama(320)
    meta = write_meta(hf, tmp_path / "meta", 1, tok)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "convert.py"),
        "--input_dir",
        str(meta),
        "--model_size",
        "7B",
        "--output_dir",
        str(out),
        "--safe_serialization",
        "True",
        "--llama_version",
        "1",
        "--quiet",
        "--dtype",
        "float32",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    ids = np.random.default_rng(0).integers(3, 320, size=(1, 9))
    got = np.array(LlamaForCausalLM.from_pretrained(out)(ids).logits)
    assert rel_err(got, logits(hf, ids)) <= 1e-4
    assert (out / "tokenizer.model").exists()


def test_seed_flag_errors_exit_2(tmp_path, capsys):
    assert main(["--output_dir", str(tmp_path / "x")]) == 2
    assert "--input_dir" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "o"), "--safe_serialization", "False"]) == 2
    assert "safetensors" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "o"), "--input_dir", str(tmp_path / "other")]) == 2
    assert "--input_dir" in capsys.readouterr().err
