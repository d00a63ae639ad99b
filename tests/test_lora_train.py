"""Training adapters here and checking them with Transformers + PEFT (the oracle): same outputs in PEFT, lower
validation loss as PEFT computes it, gradients equal to torch's, QLoRA leaves the quantized base untouched."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import peft
import pytest
import torch
import transformers
from mlx.utils import tree_flatten
from support.lora import TASKS, outputs, peft_model, save_base, token_ids

import mlx_llama
from mlx_llama.lora import LoraConfig, TrainingArgs, finetune
from mlx_llama.lora.apply import mark_trainable

VOCAB = 2000  # the demo tokenizer's
WORDS = "the of and to a in was her she he it had that as for you not with my be his".split()


def write_data(directory, task: str, n_train: int = 24, n_valid: int = 8, seed: int = 0) -> None:
    """Small synthetic datasets in each task's line format (a learnable pattern, so the loss can fall)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def row(i: int) -> dict:
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), 6)]
        if task == "causal-lm":
            return {"prompt": " ".join(words) + " ->", "completion": " yes indeed, " + words[0]}
        if task == "sequence-classification":
            return {"text": " ".join(words), "label": int("she" in words or "her" in words)}
        if task == "token-classification":
            return {"tokens": words, "labels": [int(w in ("she", "he", "her", "his")) for w in words]}
        context = " ".join(words) + " Emma " + " ".join(words[:2])
        return {"question": "Who?", "context": context, "answer": "Emma"}

    for name, n in (("train", n_train), ("valid", n_valid)):
        (directory / f"{name}.jsonl").write_text("\n".join(json.dumps(row(i)) for i in range(n)) + "\n")


def hf_base(path, cls_name: str):
    return getattr(transformers, cls_name).from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize(
    "cls_name,task,kind,compiled",
    [
        ("LlamaForCausalLM", "causal-lm", "lora", False),
        ("LlamaForCausalLM", "causal-lm", "lora", True),  # mx.compile'd step: ids checked outside the trace
        ("LlamaForSequenceClassification", "sequence-classification", "dora", False),
        ("LlamaForTokenClassification", "token-classification", "lora", False),
        ("LlamaForQuestionAnswering", "question-answering", "dora", False),
    ],
)
def test_trained_adapter_gives_the_same_outputs_in_peft(tmp_path, cls_name, task, kind, compiled):
    save_base(tmp_path / "base", cls_name, vocab_size=VOCAB)
    write_data(tmp_path / "data", task)
    model = getattr(mlx_llama, cls_name).from_pretrained(tmp_path / "base")
    tok = mlx_llama.LlamaTokenizer.from_pretrained(tmp_path / "base")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"])
    finetune(
        model,
        tok,
        tmp_path / "data",
        tmp_path / "adapter",
        config,
        TrainingArgs(iters=4, batch_size=4, learning_rate=1e-2, steps_per_eval=100, compile=compiled),
        task=task,
        fine_tune_type=kind,
    )
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["task_type"] == TASKS[cls_name] and saved["use_dora"] == (kind == "dora")
    ids = token_ids(length=11) * 7 % VOCAB + 3
    ours = outputs(model(mx.array(ids)))
    peft_m = peft.PeftModel.from_pretrained(hf_base(tmp_path / "base", cls_name), tmp_path / "adapter").eval()
    with torch.no_grad():
        theirs = outputs(peft_m(input_ids=torch.tensor(ids)))
        base = outputs(hf_base(tmp_path / "base", cls_name)(input_ids=torch.tensor(ids)))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    assert np.abs(theirs - base).max() > 1e-3  # training changed the model, and PEFT applied all of it


def _peft_val_loss(base_dir, adapter_dir, rows, tok) -> float:
    """Mean completion-token loss computed by Transformers (+ PEFT when an adapter is given)."""
    model = hf_base(base_dir, "LlamaForCausalLM")
    if adapter_dir is not None:
        model = peft.PeftModel.from_pretrained(model, adapter_dir).eval()
    total, count = 0.0, 0
    for row in rows:
        prompt = tok.encode(row["prompt"])
        ids = tok.encode(row["prompt"] + row["completion"]) + [tok.eos_token_id]
        labels = [-100] * len(prompt) + ids[len(prompt) :]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        n = len(ids) - len(prompt)
        total, count = total + loss * n, count + n
    return total / count


def test_cli_training_lowers_the_validation_loss_computed_by_peft(tmp_path):
    """`mlx-llama lora --mask-prompt` (the CLI) trains a LoRA whose held-out completion loss, computed
    independently with Transformers + PEFT, is far below the base model's."""
    from mlx_llama.cli import main

    base = mlx_llama.DEMO_MODEL
    write_data(tmp_path / "data", "causal-lm", n_train=32)
    code = main(
        [
            "lora",
            "--model",
            str(base),
            "--data",
            str(tmp_path / "data"),
            "--adapter-path",
            str(tmp_path / "adapter"),
            "--iters",
            "12",
            "--batch-size",
            "8",
            "--rank",
            "8",
            "--alpha",
            "16",
            "--target-modules",
            "q_proj,v_proj,down_proj",
            "--learning-rate",
            "1e-2",
            "--mask-prompt",
            "--lr-schedule",
            "cosine",
            "--warmup",
            "3",
            "--grad-checkpoint",
            "--quiet",
        ]
    )
    assert code == 0
    tok = mlx_llama.LlamaTokenizer.from_pretrained(base)
    rows = [json.loads(line) for line in (tmp_path / "data" / "valid.jsonl").read_text().splitlines()]
    before = _peft_val_loss(base, None, rows, tok)
    after = _peft_val_loss(base, tmp_path / "adapter", rows, tok)
    print(before, after)
    print(f"validation loss (Transformers + PEFT) {before:.3f} -> {after:.3f}")
    assert after < before / 2, (before, after)


def peft_name(name: str) -> str:
    """A PEFT parameter name as our parameter name."""
    name = name.removeprefix("base_model.model.").replace(".default", "")
    return name.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")


def test_lora_gradients_equal_torch_with_grad_checkpointing(tmp_path):
    """d(loss)/d(lora_A, lora_B, magnitude) with checkpointed layers equals PEFT's autograd (DoRA)."""
    from mlx_llama.lora.trainer import enable_grad_checkpoint

    base = save_base(tmp_path / "base")
    peft_m = peft_model(base, "LlamaForCausalLM", use_dora=True, targets=("q_proj", "up_proj"))
    peft_m.save_pretrained(tmp_path / "adapter")
    ids = token_ids()
    peft_m.train()
    loss = peft_m(input_ids=torch.tensor(ids), labels=torch.tensor(ids)).loss
    loss.backward()
    expected = {peft_name(n): p.grad.numpy() for n, p in peft_m.named_parameters() if p.requires_grad}
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    config = model.load_adapter(tmp_path / "adapter")
    mark_trainable(model, config, [])
    enable_grad_checkpoint(model)
    model.train()
    ids_mx = mx.array(ids)
    value, grads = nn.value_and_grad(model, lambda m: m(ids_mx, labels=ids_mx, use_cache=False).loss)(model)
    grads = dict(tree_flatten(grads))
    assert sorted(grads) == sorted(expected)
    np.testing.assert_allclose(value.item(), loss.item(), rtol=1e-5)
    for name, g in grads.items():
        np.testing.assert_allclose(np.array(g), expected[name], atol=1e-5, rtol=1e-4, err_msg=name)


def test_qlora_trains_on_a_4bit_base_and_leaves_it_quantized(tmp_path):
    save_base(tmp_path / "base", vocab_size=VOCAB)
    mlx_llama.convert_checkpoint(
        tmp_path / "base", tmp_path / "q4", dtype="float32", quantize=True, q_bits=4, q_group_size=32
    )
    write_data(tmp_path / "data", "causal-lm")
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "q4")
    tok = mlx_llama.LlamaTokenizer.from_pretrained(tmp_path / "q4")
    frozen = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    history = finetune(
        model,
        tok,
        tmp_path / "data",
        tmp_path / "adapter",
        LoraConfig(r=4, lora_alpha=8),
        TrainingArgs(iters=12, batch_size=4, learning_rate=2e-2, steps_per_report=4, steps_per_eval=100),
        task="causal-lm",
    )
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, nn.QuantizedLinear) and q.base_layer["weight"].dtype == mx.uint32
    after = dict(tree_flatten(model.parameters()))
    for key, value in frozen.items():
        key = key.replace("q_proj.", "q_proj.base_layer.").replace("v_proj.", "v_proj.base_layer.")
        np.testing.assert_array_equal(np.array(after[key]), value, err_msg=key)
    val = [r["val_loss"] for r in history if "val_loss" in r]
    assert val[-1] < val[0]
    assert np.abs(np.array(q.lora_B.weight)).max() > 0
    # The saved adapter reloads onto the quantized base with the same outputs.
    ids = mx.array(token_ids() * 5 % VOCAB + 3)
    reloaded = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "q4")
    reloaded.load_adapter(tmp_path / "adapter")
    np.testing.assert_allclose(np.array(reloaded(ids).logits), np.array(model(ids).logits), atol=1e-5)


def test_resume_adapter_file_starts_from_the_saved_weights(tmp_path):
    from safetensors.numpy import load_file

    from mlx_llama.lora.tuning import prepare

    save_base(tmp_path / "base", vocab_size=VOCAB)
    write_data(tmp_path / "data", "causal-lm")
    tok = mlx_llama.LlamaTokenizer.from_pretrained(tmp_path / "base")
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    finetune(
        model,
        tok,
        tmp_path / "data",
        tmp_path / "adapter",
        LoraConfig(r=4),
        TrainingArgs(iters=3, batch_size=4, learning_rate=1e-2, steps_per_eval=100),
    )
    file = tmp_path / "adapter" / "adapter_model.safetensors"
    saved = load_file(file)
    fresh = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    prepare(fresh, LoraConfig(r=4), "lora", [], resume=file)
    for key, value in tree_flatten(fresh.trainable_parameters()):
        np.testing.assert_array_equal(np.array(value), saved["base_model.model." + key], err_msg=key)
    assert len(saved) == len(tree_flatten(fresh.trainable_parameters())) == 8  # 2 layers x q,v x A,B


def test_cli_token_classification_with_named_labels(tmp_path):
    """String labels set a 3-label head; load(adapter_path=) rebuilds it from the adapter; PEFT agrees."""
    from mlx_llama.cli import main

    save_base(tmp_path / "base", vocab_size=VOCAB)
    rows = [
        {"tokens": ["Emma", "walked", "to", "Highbury"], "labels": ["PER", "O", "O", "LOC"]},
        {"tokens": ["Mr.", "Knightley", "came"], "labels": ["PER", "PER", "O"]},
    ] * 4
    (tmp_path / "data").mkdir()
    for name in ("train", "valid"):
        (tmp_path / "data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(
            [
                "lora",
                "--model",
                str(tmp_path / "base"),
                "--task",
                "token-classification",
                "--data",
                str(tmp_path / "data"),
                "--adapter-path",
                str(tmp_path / "adapter"),
                "--iters",
                "3",
                "--batch-size",
                "2",
                "--learning-rate",
                "1e-2",
                "--quiet",
            ]
        )
        == 0
    )
    with pytest.warns(UserWarning):  # the causal checkpoint has no token-classification head
        model, tok = mlx_llama.load(tmp_path / "base", adapter_path=tmp_path / "adapter")
    assert type(model).__name__ == "LlamaForTokenClassification" and model.config.num_labels == 3
    ids = token_ids() * 7 % VOCAB + 3
    hf = transformers.LlamaForTokenClassification.from_pretrained(tmp_path / "base", num_labels=3).eval()
    peft_m = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        expected = peft_m(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.array(model(mx.array(ids)).logits), expected, atol=1e-4, rtol=1e-4)


def test_full_fine_tune_saves_a_model_transformers_loads(tmp_path):
    save_base(tmp_path / "base", vocab_size=VOCAB)
    write_data(tmp_path / "data", "causal-lm")
    model = mlx_llama.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    tok = mlx_llama.LlamaTokenizer.from_pretrained(tmp_path / "base")
    finetune(
        model,
        tok,
        tmp_path / "data",
        tmp_path / "full",
        LoraConfig(),
        TrainingArgs(iters=2, batch_size=4, learning_rate=1e-3, steps_per_eval=100),
        fine_tune_type="full",
    )
    hf, info = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "full", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = token_ids() * 7 % VOCAB + 3
    with torch.no_grad():
        expected = hf.eval()(input_ids=torch.tensor(ids)).logits.numpy()
        before = hf_base(tmp_path / "base", "LlamaForCausalLM")(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.array(model(mx.array(ids)).logits), expected, atol=1e-4, rtol=1e-4)
    assert np.abs(expected - before).max() > 1e-3  # every weight trained, so the model changed
    assert (tmp_path / "full" / "tokenizer.model").is_file()
