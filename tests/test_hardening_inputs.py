"""Bad arguments to the models, generation, `load` and the command line: a ValueError / MlxLlamaError naming
the id, field or stream and what was expected (never a segfault, garbage read or traceback)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlx_llama  # noqa: F401  (before mlx.core)
from mlx_llama import LlamaConfig, LlamaForCausalLM, load
from mlx_llama.cli import main as cli_main
from mlx_llama.errors import CheckpointError, ConfigError, InputError, MlxLlamaError
from mlx_llama.generation.api import generate
from mlx_llama.modeling.heads import LlamaForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "mlx_llama" / "assets" / "demo"
VOCAB = 100
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
)


@pytest.fixture(scope="module")
def model():
    mx.random.seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMALL))


# ---- token ids at the model's entry points -----------------------------------------------------------------
@pytest.mark.parametrize(
    "ids, message",
    [
        (mx.array([[1, 10**9]]), "holds the id 1000000000, outside the vocabulary of 100 ids"),
        (mx.array([[1, -1]]), "holds the id -1, outside the vocabulary of 100 ids"),
        (np.array([[5, VOCAB]]), "holds the id 100, outside the vocabulary of 100 ids"),
        ([[3, -7, 2]], "holds the id -7"),
        (mx.array([[1.0, 2.0]]), "must hold integer token ids, got dtype mlx.core.float32"),
        (np.array([[np.nan, 1]]), "must hold integer token ids, got dtype float64"),
        ("hello", "got text 'hello'; encode it"),
        (mx.array([1, 2, 3]), "non-empty \\[batch, length\\] array of token ids, got shape \\[3\\]"),
        (mx.zeros((1, 2, 3), mx.int32), "got shape \\[1, 2, 3\\]"),
        (np.zeros((1, 0), np.int64), "got shape \\[1, 0\\]"),
        ([[1, 2], [3]], "rectangular array"),
    ],
)
def test_bad_ids_are_value_errors_naming_the_id(model, ids, message):
    with pytest.raises(ValueError, match=message) as info:
        model(ids)
    assert isinstance(info.value, InputError)


def test_edge_ids_are_accepted(model):
    logits = model(mx.array([[0, VOCAB - 1]])).logits
    assert logits.shape == (1, 2, VOCAB) and bool(mx.isfinite(logits).all())


def test_heads_and_shapes(model):
    cls = LlamaForSequenceClassification(LlamaConfig(**SMALL, pad_token_id=0))
    with pytest.raises(InputError, match="holds the id 500"):
        cls(mx.array([[1, 500]]))
    with pytest.raises(InputError, match="attention_mask must be \\[batch, past \\+ length\\] = \\[1, 3\\]"):
        model(mx.array([[1, 2, 3]]), attention_mask=mx.ones((1, 2)))
    with pytest.raises(InputError, match="attention_mask .* got shape \\[2, 3\\]"):
        model(mx.array([[1, 2, 3]]), attention_mask=mx.ones((2, 3)))
    with pytest.raises(InputError, match="labels must be integers of shape \\[1, 3\\]"):
        model(mx.array([[1, 2, 3]]), labels=mx.array([[1, 2]]))
    with pytest.raises(InputError, match="expected an array, got text 'all'"):
        model(mx.array([[1, 2, 3]]), attention_mask="all")
    with pytest.raises(InputError, match="position_ids must be integers of shape \\[batch, 3\\]"):
        model(mx.array([[1, 2, 3]]), position_ids=[["a", "b", "c"]])
    with pytest.raises(InputError, match="rectangular numeric array"):
        model(inputs_embeds=[[[0.0] * 32], [[0.0] * 31]])
    with pytest.raises(InputError, match="inputs_embeds must be \\[batch, length, 32\\]"):
        model(inputs_embeds=mx.zeros((1, 3, 31)))


# ---- generation entry points -----------------------------------------------------------------------------
def test_generation_checks_ids_before_running(model):
    with pytest.raises(InputError, match="input_ids holds the id 1000000000, outside the vocabulary of 100"):
        model.generate(mx.array([[1, 10**9]]), max_new_tokens=2)
    with pytest.raises(InputError, match="holds the id -3"):
        model.generate([4, -3], max_new_tokens=2)
    with pytest.raises(InputError, match="must hold integer token ids"):
        model.generate(np.array([[1.5, 2.0]]), max_new_tokens=2)
    with pytest.raises(InputError, match="attention_mask holds only 0 and 1"):
        model.generate([[4, 5]], attention_mask=[[1, 7]], max_new_tokens=2)
    with pytest.raises(InputError, match="prompt holds the id 100"):
        generate(model, _IdsAsText(), [1, 2, VOCAB], max_tokens=2, eos_token_id=[])
    with pytest.raises(ConfigError, match="seed must be an integer from 0 to 2\\*\\*63 - 1, got -1"):
        model.generate([[4, 5]], max_new_tokens=2, do_sample=True, seed=-1)
    out = model.generate([[4, 5]], max_new_tokens=3)  # positive control through the trusted decode steps
    assert out.shape == (1, 5) and 0 <= int(out.min()) and int(out.max()) < VOCAB


class _IdsAsText:
    """Decodes ids as their numbers: enough of a tokenizer for id prompts."""

    eos_token_id = None

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_prompt_beyond_max_position_embeddings_warns(model):
    with pytest.warns(UserWarning, match="needs 70 positions but the model was trained on 64"):
        text = generate(model, _IdsAsText(), [1] * 70, max_tokens=1, eos_token_id=[])
    assert 0 <= int(text) < VOCAB


# ---- config.json values ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", "32"),
        ("hidden_size", 2**40),
        ("vocab_size", 1.5),
        ("num_hidden_layers", True),
        ("num_attention_heads", None),
        ("rope_scaling", "linear"),
        ("rope_scaling", [2.0]),
        ("id2label", ["a", "b"]),
        ("id2label", {"x": "a"}),
        ("label2id", {"a": "x"}),
        ("num_labels", 1e9),
        ("num_labels", 10**9),
        ("num_labels", 0),
        ("rope_theta", 0),
        ("rope_theta", -1.0),
        ("rope_theta", "big"),
        ("max_position_embeddings", 0),
        ("max_position_embeddings", -1),
        ("max_position_embeddings", "abc"),
        ("quantization", {"bits": 4}),
        ("quantization", {"group_size": 64, "bits": 7}),
        ("quantization", "4bit"),
        ("use_cache", "yes"),
        ("eos_token_id", "2"),
        ("pad_token_id", 1.5),
        ("rms_norm_eps", float("nan")),
        ("head_dim", "8"),
        ("num_key_value_heads", 3),
        ("architectures", 5),
        ("hidden_act", None),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"`{field}`"):
        LlamaConfig.from_dict({**SMALL, field: value})
    assert time.perf_counter() - start < 1.0  # no table of a billion labels built first


@pytest.mark.parametrize(
    "field", ["use_stable_embedding", "shared_input_output_embedding", "use_memory_efficient_attention"]
)
def test_open_llama_switches_must_be_booleans(field):
    from mlx_llama.open_llama_config import OpenLlamaConfig

    with pytest.raises(ConfigError, match=f"`{field}` must be true or false, got 'yes'"):
        OpenLlamaConfig.from_dict({**SMALL, field: "yes"})


def test_layer_count_is_checked_before_building_layers(tmp_path, model):
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 16000}))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="num_hidden_layers is 16000, but the weights hold 2 layers"):
        LlamaForCausalLM.from_pretrained(tmp_path / "m")
    assert time.perf_counter() - start < 2.0


def test_loader_errors_name_the_file_and_catch_a_false_quantization_block(tmp_path, model):
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "rope_theta": -1}))
    with pytest.raises(ConfigError, match=r"m/config.json: config field `rope_theta` must be a positive number"):
        LlamaForCausalLM.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "quantization": {"group_size": 32, "bits": 4}}))
    with pytest.raises(CheckpointError, match="has a `quantization` block, but no tensor has .scales"):
        LlamaForCausalLM.from_pretrained(tmp_path / "m")


# ---- load ------------------------------------------------------------------------------------------------
def test_load_arguments_and_tokenizer_ids_beyond_the_vocab(tmp_path):
    with pytest.raises(ConfigError, match="expected a model directory or Hub id, got None"):
        load(None)
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo)
    config = json.loads((demo / "tokenizer_config.json").read_text())
    added = dict(next(iter(config["added_tokens_decoder"].values())), content="<big>")
    for token_id, error in (("2500", CheckpointError), ("3000000", MlxLlamaError)):  # the tokenizer refuses the 2nd
        config["added_tokens_decoder"] = {**config["added_tokens_decoder"], token_id: added}
        (demo / "tokenizer_config.json").write_text(json.dumps(config))
        with pytest.raises(error, match=f"id {token_id}"):
            load(demo)
        del config["added_tokens_decoder"][token_id]
    with pytest.raises(CheckpointError, match="tokenizer has token id 2500, but the model's vocab_size is 2000"):
        config["added_tokens_decoder"]["2500"] = added
        (demo / "tokenizer_config.json").write_text(json.dumps(config))
        load(demo)


# ---- the command line ------------------------------------------------------------------------------------
class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False


def _cli(capsys, monkeypatch, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
    status = cli_main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_seed_and_stdin(capsys, monkeypatch):
    status, _, err = _cli(capsys, monkeypatch, "generate", "--prompt", "hi", "--seed", "-1", "--quiet")
    assert status == 2 and err == "mlx-llama: error: --seed must be an integer from 0 to 2**63 - 1, got -1\n"
    status, _, err = _cli(capsys, monkeypatch, "generate", "--prompt", "-", "--quiet", stdin=b"caf\xe9 au lait")
    assert status == 2 and err == "mlx-llama: error: stdin is not valid UTF-8 (byte 0xe9 at offset 3)\n"
    status, out, err = _cli(capsys, monkeypatch, "chat", "--max-tokens", "2", "--quiet", stdin=b"hello\n\xff\xfe\n")
    assert status == 2 and err == "mlx-llama: error: stdin line 2 is not valid UTF-8 (byte 0xff at offset 0)\n"
    assert out  # the first, valid line was answered


def test_cli_prompt_longer_than_the_model_needs_a_flag(capsys, monkeypatch):
    prompt = "the cat sat on the mat " * 60  # about 400 tokens; the demo model has 256 positions
    status, out, err = _cli(capsys, monkeypatch, "generate", "--prompt", prompt, "--quiet", "--max-tokens", "1")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert "max_position_embeddings" in err and "but the model was trained on 256" in err
    assert "--allow-long-prompt" in err
    status, out, err = _cli(
        capsys, monkeypatch, "generate", "--prompt", prompt, "--max-tokens", "1", "--allow-long-prompt"
    )
    assert status == 0 and out.strip() and "warning: the prompt needs" in err


def test_cli_in_a_subprocess_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mlx_llama", "generate", "--prompt", "-", "--quiet"],
        input=b"\xff\xfe\xfd",
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "stdin is not valid UTF-8" in err
    assert isinstance(InputError("x"), MlxLlamaError) and isinstance(InputError("x"), ValueError)


@pytest.mark.parametrize("bad", [None, "hello", b"\x01", 3.5, [1, "a"], [1.0, 2.0], [True]])
def test_decode_takes_integer_ids_only(bad):
    from mlx_llama import LlamaTokenizer
    from mlx_llama.errors import TokenizerError

    tok = LlamaTokenizer.from_pretrained(DEMO)
    with pytest.raises(TokenizerError, match="decode takes"):
        tok.decode(bad)
    assert tok.decode(np.array([5, 6])) == tok.decode([5, 6]) == tok.decode(mx.array([5, 6]))
