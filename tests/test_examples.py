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
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import sentencepiece

import mlx_llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DEMO = mlx_llama.DEMO_MODEL
TIMEOUT_S = 60


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def hf_demo():
    """Transformers' slow tokenizer and float32 LlamaForCausalLM for the demo directory: the oracles."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield (
            transformers.LlamaTokenizer.from_pretrained(DEMO, legacy=False),
            transformers.LlamaForCausalLM.from_pretrained(DEMO, torch_dtype=torch.float32).eval(),
        )
    finally:
        sys.path.remove(str(EXAMPLES))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(-1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(labels)), labels]))


def pooled(hf_tok, hf, texts: list[str]) -> np.ndarray:
    """Texts through Transformers' LlamaModel (right-padded batch): each one's final hidden state at its last token."""
    ids = [hf_tok(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    batch = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    with torch.no_grad():
        hidden = hf.model(batch, attention_mask=mask).last_hidden_state.double().numpy()
    return hidden[np.arange(len(ids)), [len(row) - 1 for row in ids]]


def adam_head(weight, x, y, steps: int, lr: float, b1=0.9, b2=0.999, eps=1e-8):
    """Full-batch Adam on a bias-free linear head (MLX's AdamW defaults: no bias correction, here no decay);
    returns the loss before each step and the final weight."""
    m, v, losses = np.zeros_like(weight), np.zeros_like(weight), []
    onehot = np.eye(weight.shape[0])[y]
    for _ in range(steps):
        logits = x @ weight.T
        losses.append(cross_entropy(logits, y))
        p = np.exp(logits - logits.max(-1, keepdims=True))
        grad = ((p / p.sum(-1, keepdims=True) - onehot).T @ x) / len(y)
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
        weight = weight - lr * m / (np.sqrt(v) + eps)
    return losses, weight


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


def test_demo_matches_transformers(hf_demo):
    """Transformers (the oracle) loads the shipped directory and computes the same logits; its slow
    sentencepiece tokenizer encodes like ours."""
    hf_tok, hf = hf_demo
    text = "Emma could not repress a smile at this, and said, 1815."
    model, tok = mlx_llama.load(DEMO)
    ids = tok.encode(text)
    assert ids == hf_tok(text)["input_ids"]
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
def test_generate_example(hf_demo):
    """The greedy line is Transformers' greedy continuation, as sentencepiece decodes it."""
    hf_tok, hf = hf_demo
    out = run_example("generate.py", "--max-tokens", "12").stdout
    prompt = re.search(r"^prompt : (.+)$", out, re.M).group(1)
    ids = torch.tensor([hf_tok(prompt)["input_ids"]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, pad_token_id=0
        )[0].tolist()
    new = [i for i in full[ids.shape[1] :] if i != hf.config.eos_token_id]
    sp = sentencepiece.SentencePieceProcessor(model_file=str(DEMO / "tokenizer.model"))
    assert f"\ngreedy : {sp.decode(new)}\n" in out
    # The Transformers-style model.generate is greedy too: prompt + the same continuation.
    assert f"\nmodel.generate: {hf_tok.decode(full, skip_special_tokens=True)}\n" in out
    sampled = re.search(r"^sampled: (.+)$", out, re.M).group(1)
    assert re.search(r"[a-z]{2,}", sampled)


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
    """The printed loss is the cross-entropy of the printed logits (recomputed here) against [positive, negative]."""
    proc = run_example("sequence_classification.py")
    assert "logits shape: (2, 2)" in proc.stdout
    assert "score.weight not in the checkpoint; newly initialised" in proc.stderr
    rows = re.findall(r"logits \[(\S+), (\S+)\] -> (\w+)", proc.stdout)
    logits = np.array([[float(a), float(b)] for a, b, _ in rows])
    assert [name for *_, name in rows] == [("negative", "positive")[i] for i in logits.argmax(-1)]
    loss = float(re.search(r"cross-entropy .*: ([\d.]+)", proc.stdout).group(1))
    assert abs(loss - cross_entropy(logits, np.array([1, 0]))) < 2e-3  # logits are printed to 3 decimals


@pytest.mark.subprocess
def test_question_answering_example(hf_demo):
    """Span positions from Transformers' tokenizer; the chosen span lies in the context and decodes as printed."""
    hf_tok, _ = hf_demo
    proc = run_example("question_answering.py")
    assert "qa_outputs" in proc.stderr
    question = hf_tok("Who came to Netherfield?")["input_ids"]
    context = hf_tok("Mr. Bingley came to Netherfield with his two sisters.", add_special_tokens=False)["input_ids"]
    answer = hf_tok("Mr. Bingley", add_special_tokens=False)["input_ids"]
    start, end = len(question), len(question) + len(answer) - 1
    assert f"true span {start}..{end}: 'Mr. Bingley'" in proc.stdout
    s, e, text = re.search(r"^span (\d+)\.\.(\d+): '(.*)' \(untrained", proc.stdout, re.M).groups()
    s, e = int(s), int(e)
    assert len(question) <= s <= e < min(s + 8, len(question) + len(context))
    assert text == hf_tok.decode((question + context)[s : e + 1])
    assert np.isfinite(float(re.search(r"span loss: ([\d.]+)", proc.stdout).group(1)))


@pytest.mark.subprocess
def test_token_classification_example():
    """Gold tags against the character offsets of Transformers' fast tokenizer: a token takes its word's tag."""
    out = run_example("token_classification.py").stdout
    text = "Emma walked to Highbury with Harriet."
    fast = transformers.LlamaTokenizerFast.from_pretrained(DEMO, from_slow=True, legacy=False)
    enc = fast(text, return_offsets_mapping=True)
    assert f"logits shape: (1, {len(enc['input_ids'])}, 3)" in out
    tags = {"Emma": "PERSON", "Harriet": "PERSON", "Highbury": "PLACE"}
    words = [(m.start(), m.end(), tags.get(m.group(), "O")) for m in re.finditer(r"\w+|[^\w\s]", text)]
    expected = ["-"] + [
        next(tag for a, b, tag in words if b > start and b >= end) for start, end in enc["offset_mapping"][1:]
    ]
    assert re.search(r"^gold: (.+)$", out, re.M).group(1) == str(expected)
    assert expected.count("PERSON") >= 2 and "PLACE" in expected


@pytest.mark.subprocess
@pytest.mark.slow
def test_finetune_example_loss_falls(hf_demo):
    """The head-only training, redone here in numpy on Transformers' pooled features: same losses, same guesses."""
    import finetune_classifier as ex  # the example's data (examples/ is on sys.path, see hf_demo)

    out = run_example("finetune_classifier.py", "--steps", "15").stdout
    hf_tok, hf = hf_demo
    mx.random.seed(0)  # the example's seed: the same initial head as the example's
    with pytest.warns(UserWarning, match="score.weight"):
        head = mlx_llama.LlamaForSequenceClassification.from_pretrained(DEMO, num_labels=2).score
    weight = np.array(head.weight)
    x, y = pooled(hf_tok, hf, [t for t, _ in ex.TRAIN]), np.array([label for _, label in ex.TRAIN])
    losses, weight = adam_head(weight.astype(np.float64), x, y, steps=15, lr=1e-3)
    for step, loss in re.findall(r"^step\s+(\d+)\s+loss ([\d.]+)$", out, re.M):
        assert abs(float(loss) - losses[int(step) - 1]) < 2e-3, (step, loss, losses)
    first, last = map(float, re.search(r"training loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert last < first / 2
    guesses = (pooled(hf_tok, hf, [t for t, _ in ex.HELD_OUT]) @ weight.T).argmax(-1)
    printed = re.findall(r"^  '.*': (\w+) \(true: \w+\)$", out, re.M)
    assert printed == [ex.LABELS[int(g)] for g in guesses]
    correct, total = map(int, re.search(r"held-out accuracy (\d+)/(\d+)", out).groups())
    assert correct == sum(int(g) == t for g, (_, t) in zip(guesses, ex.HELD_OUT)) and correct >= total - 1


@pytest.mark.subprocess
def test_convert_example(tmp_path):
    out = run_example("convert_model.py", "--out", str(tmp_path / "q4"), "--max-tokens", "8").stdout
    before, after = map(float, re.search(r"weights: ([\d.]+) MB -> ([\d.]+) MB", out).groups())
    assert after < before / 2
    config = json.loads((tmp_path / "q4" / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert re.search(r"^\s*4-bit: Her mother was \S", out, re.M)
