"""Data formats, prompt masking, schedules and CLI errors of `mlx-llama lora`."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import pytest

import mlx_llama
from mlx_llama.cli import main
from mlx_llama.lora.data import IGNORE, Encoder, batch_arrays
from mlx_llama.lora.trainer import TrainingArgs, learning_rate_schedule


@pytest.fixture(scope="module")
def tok():
    return mlx_llama.LlamaTokenizer.from_pretrained(mlx_llama.DEMO_MODEL, legacy=False)


def scored_text(tok, ex) -> str:
    return tok.decode([i for i, y in zip(ex.input_ids, ex.token_labels, strict=True) if y != IGNORE])


def test_prompt_completion_masks_the_prompt(tok):
    row = {"prompt": "Tell me about the ball.\n", "completion": "It was most charming."}
    ex = Encoder(tok, "causal-lm", mask_prompt=True).encode(row)
    assert ex.input_ids == tok.encode(row["prompt"] + row["completion"]) + [tok.eos_token_id]
    assert scored_text(tok, ex).strip() == "It was most charming.</s>"
    unmasked = Encoder(tok, "causal-lm").encode(row)
    assert unmasked.token_labels == unmasked.input_ids


def test_messages_use_the_chat_template_and_score_the_last_answer(tok):
    messages = [{"role": "user", "content": "Who called today?"}, {"role": "assistant", "content": "Mr. Knightley."}]
    ex = Encoder(tok, "causal-lm", mask_prompt=True).encode({"messages": messages})
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert "Who called today?" in rendered
    assert tok.decode(ex.input_ids, skip_special_tokens=True) == tok.decode(
        tok.encode(rendered), skip_special_tokens=True
    )
    assert scored_text(tok, ex).replace("</s>", "").strip() == "Mr. Knightley."


def test_classification_token_and_qa_rows(tok):
    encoder = Encoder(tok, "sequence-classification", label2id={"neg": 0, "pos": 1})
    ex = encoder.encode({"text": "Fine.", "label": "pos"})
    assert ex.label == 1 and ex.input_ids == tok.encode("Fine.")
    words = ["Emma", "walked", "home"]
    ex = Encoder(tok, "token-classification").encode({"tokens": words, "labels": [1, 0, 2]})
    firsts = [y for y in ex.token_labels if y != IGNORE]
    assert firsts == [1, 0, 2] and tok.decode(ex.input_ids, skip_special_tokens=True) == "Emma walked home"
    for context, answer in (("It was Mr. Knightley at the door.", "Mr. Knightley"), ("Emma, 1815.", "1815")):
        row = {
            "question": "Who?",
            "context": context,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]},
        }
        ex = Encoder(tok, "question-answering").encode(row)
        start, end = ex.span
        assert tok.decode(ex.input_ids[start : end + 1]).strip() == answer
        assert Encoder(tok, "question-answering").encode({**row, "answers": None, "answer": answer}).span == ex.span
    batch, tokens = batch_arrays([ex, ex], "question-answering", pad_id=2)
    assert batch["start_positions"].tolist() == [start, start] and tokens == 2 * len(ex.input_ids)


def test_warmup_then_cosine_schedule():
    schedule = learning_rate_schedule(TrainingArgs(iters=10, learning_rate=1e-3, lr_schedule="cosine", warmup=2))
    got = [schedule(mx.array(step)).item() for step in range(11)]
    expected = [0.0, 5e-4] + [1e-3 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
    assert got == pytest.approx(expected, abs=1e-9)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["lora", "--data", str(tmp_path / "nope"), "--iters", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlx-llama: error:") and "nope" in err and "\n" not in err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"text": "fine"}\n{"text": broken}\n')
    assert main(["lora", "--data", str(tmp_path / "d"), "--iters", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.jsonl:2: not valid JSON" in err and "\n" not in err
    (tmp_path / "d" / "train.jsonl").write_text(json.dumps({"completion": "x"}) + "\n")
    assert main(["lora", "--data", str(tmp_path / "d"), "--iters", "1", "--quiet"]) == 2
    assert "line 1" in capsys.readouterr().err
    assert main(["fuse", "--adapter-path", str(tmp_path / "none"), "--save-path", str(tmp_path / "o")]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
