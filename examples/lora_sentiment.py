"""A sentiment classifier from the demo model: LoRA + a new sequence-classification head, PEFT-format adapter.

The demo checkpoint is a causal LM; fine-tuning with task "sequence-classification" builds
LlamaForSequenceClassification (new `score` head, trained and saved with the adapter as PEFT's
modules_to_save) and adapts the attention. The adapter is reloaded with `mlx_llama.load(..., adapter_path=)`,
which picks the head from the adapter's task type, and held-out sentences are classified. The same with the CLI:

    mlx-llama lora --task sequence-classification --data DATA --adapter-path ADAPTER --iters 40 --learning-rate 1e-3
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import warnings
from pathlib import Path

import mlx_llama  # first: sets up the BLAS before MLX loads (Linux)

# isort: split
import mlx.core as mx

from mlx_llama.lora import LoraConfig, TrainingArgs, finetune

LABELS = {0: "negative", 1: "positive"}
SUBJECTS = ["She", "He", "Emma", "Harriet", "Mr. Knightley", "Her mother", "The colonel", "My aunt", "Jane"]
POSITIVE = ["delighted", "happy", "charmed", "cheerful", "pleased", "grateful", "merry", "content"]
NEGATIVE = ["miserable", "wretched", "unhappy", "vexed", "angry", "dismal", "weary", "grieved"]
OCCASIONS = ["with the ball", "after the dinner", "by the letter", "at the news", "with the visit", "on the walk"]
HELD_OUT = [
    ("Jane was happy with the ball.", 1),
    ("The colonel was miserable at the news.", 0),
    ("My aunt was pleased by the letter.", 1),
    ("Harriet was wretched after the dinner.", 0),
    ("He was cheerful on the walk.", 1),
    ("She was vexed with the visit.", 0),
]


def write_data(directory: Path, n_train: int = 200) -> None:
    rng = random.Random(0)
    held = {text for text, _ in HELD_OUT}
    rows = []
    while len(rows) < n_train:
        label = rng.randrange(2)
        adjective = rng.choice(POSITIVE if label else NEGATIVE)
        text = f"{rng.choice(SUBJECTS)} was {adjective} {rng.choice(OCCASIONS)}."
        if text not in held:
            rows.append({"text": text, "label": LABELS[label]})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    valid = [{"text": t, "label": LABELS[y]} for t, y in HELD_OUT]
    (directory / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in valid))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--out", help="where to keep the data and the adapter (default: a temporary directory)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="lora_sentiment_"))
    write_data(out / "data")

    mx.random.seed(0)  # the new head's initialisation
    tokenizer = mlx_llama.LlamaTokenizer.from_pretrained(mlx_llama.DEMO_MODEL)
    with warnings.catch_warnings():  # the causal checkpoint has no `score`: expected, it is trained below
        warnings.simplefilter("ignore")
        model = mlx_llama.LlamaForSequenceClassification.from_pretrained(
            mlx_llama.DEMO_MODEL, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
        )
    history = finetune(
        model,
        tokenizer,
        out / "data",
        out / "adapter",
        LoraConfig(r=8, lora_alpha=16),
        TrainingArgs(
            iters=args.iters, batch_size=8, learning_rate=1e-3, steps_per_report=10, steps_per_eval=args.iters
        ),
        task="sequence-classification",
        report=lambda r: print("  ", {k: round(v, 4) for k, v in r.items()}),
    )
    val = [r["val_loss"] for r in history if "val_loss" in r]
    print(f"validation loss {val[0]:.4f} -> {val[-1]:.4f}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = mlx_llama.load(mlx_llama.DEMO_MODEL, adapter_path=out / "adapter")
    correct = 0
    for text, gold in HELD_OUT:
        guess = model(mx.array([tokenizer.encode(text)])).logits.argmax(axis=-1).item()
        correct += guess == gold
        print(f"  {text!r}: {LABELS[guess]} (true: {LABELS[gold]})")
    print(f"held-out accuracy {correct}/{len(HELD_OUT)}")
    print(f"adapter: {out / 'adapter'}")


if __name__ == "__main__":
    main()
