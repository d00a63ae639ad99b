"""Perplexity against Transformers' own loss on the same windows, and the CLI's decoding flags."""

import math

import pytest

torch = pytest.importorskip("torch")

from support.checkpoints import corpus  # noqa: E402

import mlx_llama.cli as cli  # noqa: E402
from mlx_llama import perplexity  # noqa: E402
from mlx_llama.errors import ConfigError  # noqa: E402
from mlx_llama.modeling.heads import LlamaForCausalLM  # noqa: E402
from mlx_llama.tokenizer import LlamaTokenizer  # noqa: E402

TEXT = " ".join(corpus(30))


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    path, hf = tiny_checkpoint
    return path, hf, LlamaForCausalLM.from_pretrained(path, dtype="float32"), LlamaTokenizer.from_pretrained(path)


def hf_perplexity(hf, ids, length):
    """exp(total NLL / predictions), each window's mean loss from Transformers weighted by its L - 1 targets."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), length):
            window = torch.tensor([ids[start : start + length]])
            if window.shape[1] < 2:
                break
            loss = hf(window, labels=window).loss.double().item()
            total, count = total + loss * (window.shape[1] - 1), count + window.shape[1] - 1
    return math.exp(total / count)


@pytest.mark.parametrize("length", [16, 50])
def test_perplexity_matches_transformers(checkpoint, length):
    _, hf, model, tok = checkpoint
    ids = tok.encode(TEXT)
    assert len(ids) % length not in (0, 1)  # a shorter last window is scored too
    expected = hf_perplexity(hf, ids, length)
    assert perplexity(model, tok, TEXT, context_length=length) == pytest.approx(expected, rel=1e-4)


def test_perplexity_bad_inputs(checkpoint):
    _, _, model, tok = checkpoint
    with pytest.raises(ConfigError, match="context_length"):
        perplexity(model, tok, TEXT, context_length=1)
    with pytest.raises(ConfigError, match="at least 2"):
        perplexity(model, tok, "", context_length=8, add_special_tokens=False)


def test_cli_perplexity_and_decoding_flags(checkpoint, tmp_path, capsys):
    path, hf, model, tok = checkpoint
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    assert cli.main(["perplexity", "--model", str(path), "--data", str(data), "--context-length", "16", "--quiet"]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(hf_perplexity(hf, tok.encode(TEXT), 16), rel=1e-4)
    plain = ["generate", "--model", str(path), "--prompt", "the cat sat on the mat", "--max-tokens", "12"]
    assert cli.main(plain + ["--quiet"]) == 0
    expected = capsys.readouterr().out
    for flags in (
        ["--draft-model", str(path), "--num-draft-tokens", "2"],
        ["--prompt-lookup", "3"],
        ["--max-kv-size", "64"],
    ):
        assert cli.main(plain + flags) == 0
        out = capsys.readouterr()
        assert out.out == expected, flags
        if "--max-kv-size" not in flags:
            assert "accepted drafts" in out.err
    for flags, message in (
        (["--prompt-lookup", "0"], "--prompt-lookup must be"),
        (["--max-kv-size", "64", "--kv-bits", "4"], "not both"),
        (["--draft-model", str(path), "--prompt-lookup", "2"], "not both"),
    ):
        assert cli.main(plain + flags) == 2
        assert message in capsys.readouterr().err
