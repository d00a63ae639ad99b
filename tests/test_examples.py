"""The bundled demo model (assets/demo) and the examples that run on it.

The demo checkpoint is checked against independent oracles: Transformers reads the same directory and must
give the same logits, sentencepiece's own proto must carry LLaMA's trainer options, and the model must
prefer English word order to the same words reversed. Each example runs as a user would run it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlx_llama

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DEMO = mlx_llama.DEMO_MODEL
TIMEOUT_S = 60


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# ---- the demo checkpoint --------------------------------------------------------------------------------------

def test_demo_files_and_size():
    names = {p.name for p in DEMO.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json", "README.md"} <= names
    total = sum(p.stat().st_size for p in DEMO.iterdir())
    assert total <= 10 * 1024 * 1024, f"demo assets are {total / 1e6:.1f} MB, over the 10 MB budget"
    config = json.loads((DEMO / "config.json").read_text())
    assert config["torch_dtype"] in ("float16", "bfloat16")
    tok_config = json.loads((DEMO / "tokenizer_config.json").read_text())
    assert tok_config["add_bos_token"] is True and "chat_template" not in tok_config


def test_demo_tokenizer_has_llama_trainer_options():
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((DEMO / "tokenizer.model").read_bytes())
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    assert spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert spec.byte_fallback and spec.split_digits
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    assert norm.name == "identity" and norm.add_dummy_prefix and not norm.remove_extra_whitespaces
    config = json.loads((DEMO / "config.json").read_text())
    assert len(proto.pieces) == config["vocab_size"]


def test_demo_matches_transformers():
    """Transformers (the oracle) loads the shipped directory and computes the same logits; its slow
    sentencepiece tokenizer encodes like ours."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    text = "Emma could not repress a smile at this, and said, 1815."
    hf_tok = transformers.LlamaTokenizer.from_pretrained(DEMO, legacy=False)
    model, tok = mlx_llama.load(DEMO)
    ids = tok.encode(text)
    assert ids == hf_tok(text)["input_ids"]
    hf = transformers.LlamaForCausalLM.from_pretrained(DEMO, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits.numpy()
    got = np.array(model(mx.array([ids])).logits)
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)


def test_demo_prefers_english_word_order():
    """A sentence not in the corpus costs less than the same words in reverse order: the model learned English."""
    model, tok = mlx_llama.load(DEMO)

    def loss(text: str) -> float:
        ids = mx.array([tok.encode(text)])
        return model(ids, labels=ids).loss.item()

    sentence = "She was very glad to see her sister again, and they talked of the ball all the evening."
    reversed_words = " ".join(reversed(sentence.rstrip(".").split())) + "."
    assert loss(sentence) < loss(reversed_words) - 1.0


# ---- the examples -------------------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_generate_example():
    out = run_example("generate.py", "--max-tokens", "12").stdout
    greedy = re.search(r"^greedy : (.+)$", out, re.M).group(1)
    sampled = re.search(r"^sampled: (.+)$", out, re.M).group(1)
    assert re.search(r"[a-z]{2,}", greedy) and re.search(r"[a-z]{2,}", sampled)
    # The Transformers-style model.generate is greedy too: prompt + the same continuation.
    assert re.search(r"^model.generate: (.+)$", out, re.M).group(1).endswith(greedy)


@pytest.mark.subprocess
def test_stream_example():
    out = run_example("stream.py", "--max-tokens", "12").stdout
    assert "[12 tokens" in out and "finish reason: length" in out


@pytest.mark.subprocess
def test_chat_example_reuses_the_cache():
    out = run_example("chat.py", "--max-tokens", "8").stdout
    assert out.count("Assistant: ") == 2
    reused = [int(n) for n in re.findall(r"reused (\d+) from the cache", out)]
    assert reused[0] == 0 and reused[1] > 0


@pytest.mark.subprocess
def test_sequence_classification_example():
    proc = run_example("sequence_classification.py")
    assert "logits shape: (2, 2)" in proc.stdout
    assert "score.weight not in the checkpoint; newly initialised" in proc.stderr
    loss = float(re.search(r"cross-entropy .*: ([\d.]+)", proc.stdout).group(1))
    assert 0 < loss < 10


@pytest.mark.subprocess
def test_question_answering_example():
    proc = run_example("question_answering.py")
    assert "true span" in proc.stdout and "'Mr. Bingley'" in proc.stdout
    assert "qa_outputs" in proc.stderr
    assert np.isfinite(float(re.search(r"span loss: ([\d.]+)", proc.stdout).group(1)))


@pytest.mark.subprocess
def test_token_classification_example():
    out = run_example("token_classification.py").stdout
    assert re.search(r"logits shape: \(1, \d+, 3\)", out)
    gold = re.search(r"^gold: (.+)$", out, re.M).group(1)
    assert gold.count("'PERSON'") >= 2 and "'PLACE'" in gold


@pytest.mark.subprocess
@pytest.mark.slow
def test_finetune_example_loss_falls():
    out = run_example("finetune_classifier.py", "--steps", "15").stdout
    first, last = map(float, re.search(r"training loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert last < first / 2
    correct, total = map(int, re.search(r"held-out accuracy (\d+)/(\d+)", out).groups())
    assert correct >= total - 1


@pytest.mark.subprocess
def test_convert_example(tmp_path):
    out = run_example("convert_model.py", "--out", str(tmp_path / "q4"), "--max-tokens", "8").stdout
    before, after = map(float, re.search(r"weights: ([\d.]+) MB -> ([\d.]+) MB", out).groups())
    assert after < before / 2
    config = json.loads((tmp_path / "q4" / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert re.search(r"^\s*4-bit: Her mother was \S", out, re.M)
