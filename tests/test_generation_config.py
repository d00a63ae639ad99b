"""generation_config.json against Transformers: its eos list, lengths and sampling defaults in `model.generate`
(explicit arguments win), its eos list in stream_generate and the CLI, and GenerationConfig files both ways."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hf_oracle import hf_model
from tokenizer_corpus import tiny_model_path

import mlx_llama.cli as cli
from mlx_llama import GenerationConfig, load
from mlx_llama.errors import ConfigError
from mlx_llama.generation import stream_generate
from mlx_llama.tokenizer import LlamaTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PROMPTS = [[1, 37, 99, 250, 12], [1, 300, 5]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Transformers Llama (vocab 512, the tiny SentencePiece model) whose greedy text has known ids."""
    path = tmp_path_factory.mktemp("gen")
    hf = hf_model(vocab_size=512, max_position_embeddings=128, seed=4, bos_token_id=1, eos_token_id=2)
    hf.save_pretrained(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LlamaTokenizer(tiny_model_path(), legacy=True).save_pretrained(path)
        free = hf.generate(torch.tensor([PROMPTS[0]]), max_new_tokens=12, do_sample=False, eos_token_id=None)
    generated = free[0, len(PROMPTS[0]) :].tolist()
    return path, hf, generated


def write_generation_config(path, **fields):
    transformers.GenerationConfig(**fields).save_pretrained(path)
    return transformers.LlamaForCausalLM.from_pretrained(path).eval()  # reads it, as a user's load would


def hf_generate(hf, prompts, **kwargs):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.generate(ids, attention_mask=mask, **kwargs).numpy(), ids.numpy(), mask.numpy()


def ours_generate(model, ids, mask, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array(model.generate(ids, attention_mask=mask, **kwargs))


def test_eos_list_and_lengths_stop_where_transformers_stops(checkpoint):
    path, _, generated = checkpoint
    stops = [generated[6], 511, generated[3]]  # a list, as Llama 3's <|end_of_text|>/<|eom_id|>/<|eot_id|>
    for fields in (
        {"eos_token_id": stops, "pad_token_id": 0},
        {"eos_token_id": stops, "pad_token_id": 0, "max_new_tokens": 9},
        {"eos_token_id": [509, 510], "pad_token_id": 0, "max_length": 14},
        {"eos_token_id": stops, "pad_token_id": 0, "do_sample": True, "temperature": 0.7, "top_k": 5},
    ):
        hf = write_generation_config(path, **fields)
        model, _ = load(path)
        assert model.generation_config.eos_token_ids == fields["eos_token_id"]
        extra = {"do_sample": False} if fields.get("do_sample") else {}  # explicit arguments win
        expected, ids, mask = hf_generate(hf, PROMPTS, **extra)
        got = ours_generate(model, ids, mask, **extra)
        assert got.tolist() == expected.tolist(), fields
        if fields["eos_token_id"] == stops:  # row 0 stops at the list's third id, then pads
            n, first = ids.shape[1], next(i for i, t in enumerate(generated) if t in stops)
            assert got[0, n + first] == generated[first] and (got[0, n + first + 1 :] == 0).all()
    sampled = {ours_generate(model, ids, mask, seed=s)[0, ids.shape[1] :].tobytes() for s in range(4)}
    assert len(sampled) > 1  # the config's do_sample=True applies when the caller does not say
    assert ours_generate(model, ids, mask, max_new_tokens=3).shape[1] == ids.shape[1] + 3


def test_stream_generate_and_cli_stop_at_the_config_eos(checkpoint, capsys):
    path, _, generated = checkpoint
    hf = write_generation_config(path, eos_token_id=[2, generated[4]], pad_token_id=0)
    model, tok = load(path)
    expected, _, _ = hf_generate(hf, [PROMPTS[0]], max_new_tokens=30)
    new = expected[0, len(PROMPTS[0]) :].tolist()
    assert new[-1] == generated[4] and len(new) == 5
    steps = list(stream_generate(model, tok, PROMPTS[0], max_tokens=30))
    assert [s.token for s in steps] == new and steps[-1].finish_reason == "stop"
    prompt = tok.decode(PROMPTS[0], skip_special_tokens=True)
    assert cli.main(["generate", "--model", str(path), "--prompt", prompt, "--no-chat-template", "--quiet"]) == 0
    prompt_ids = tok.encode(prompt)
    hf_cli, _, _ = hf_generate(hf, [prompt_ids], max_new_tokens=256)
    cli_new = hf_cli[0, len(prompt_ids) :].tolist()
    stop = [i for i, t in enumerate(cli_new) if t in (2, generated[4])]
    assert stop, "the oracle must stop within 256 tokens"
    want = tok.decode(cli_new[: stop[0]], skip_special_tokens=True)
    assert capsys.readouterr().out == want + "\n"


def test_generation_config_files_both_ways(tmp_path):
    ours = GenerationConfig(eos_token_id=[128001, 128008, 128009], do_sample=True, temperature=0.6, top_p=0.9,
                            bos_token_id=128000, max_new_tokens=64)  # fmt: skip
    ours.save_pretrained(tmp_path)
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    for name in ("eos_token_id", "do_sample", "temperature", "top_p", "bos_token_id", "max_new_tokens", "top_k"):
        assert getattr(theirs, name) == getattr(ours, name), name
    theirs.update(repetition_penalty=1.3, num_beams=1, max_length=99)
    theirs.save_pretrained(tmp_path / "t")
    back = GenerationConfig.from_pretrained(tmp_path / "t")
    assert (back.repetition_penalty, back.max_length, back.eos_token_ids) == (1.3, 99, [128001, 128008, 128009])
    (tmp_path / "bad.json").write_text(json.dumps({"eos_token_id": "2"}))
    with pytest.raises(ConfigError, match="eos_token_id"):
        GenerationConfig.from_pretrained(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps({"temperature": [1]}))
    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig.from_pretrained(tmp_path / "bad.json")


def test_cli_generate_and_chat_use_the_jinja_template(checkpoint, capsys, monkeypatch):
    import io

    from chat_templates import ZEPHYR

    path, _, _ = checkpoint
    hf = write_generation_config(path, eos_token_id=2, pad_token_id=0)
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": ZEPHYR}))
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat"}]
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True)
    out, _, _ = hf_generate(hf, [ids], max_new_tokens=8)
    want = hf_tok.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert len(want.strip()) > 3, want  # a real answer, not an immediate eos
    args = ["--model", str(path), "--max-tokens", "8", "--system", "be brief", "--quiet"]
    assert cli.main(["generate", "--prompt", "the cat", *args]) == 0
    assert capsys.readouterr().out == want + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("the cat\n"))
    assert cli.main(["chat", *args]) == 0
    assert capsys.readouterr().out == want + "\n"
