"""Teach the demo model a style with LoRA, from a few hundred generated lines, then fuse the adapter.

Every training line answers "Tell me about the <thing>." in one fixed, gushing style ("Oh, the <thing> was
most <adjective>, I do declare!"). After a short LoRA run (prompt masked, so only the answer is learned)
the model answers held-out things in that style; the adapter (PEFT format) is reloaded with
`mlx_llama.load(..., adapter_path=...)` and fused into a plain model. The same with the CLI:

    mlx-llama lora --data DATA --adapter-path ADAPTER --iters 60 --mask-prompt --learning-rate 2e-3
    mlx-llama fuse --adapter-path ADAPTER --save-path FUSED
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import mlx_llama  # first: sets up the BLAS before MLX loads (Linux)
from mlx_llama.lora import LoraConfig, TrainingArgs, finetune, fuse

THINGS = [
    "garden",
    "ball",
    "letter",
    "carriage",
    "dinner",
    "walk",
    "parlour",
    "bonnet",
    "house",
    "party",
    "music",
    "weather",
    "village",
    "church",
    "library",
    "shrubbery",
    "piano",
    "card table",
    "visit",
    "concert",
]
HELD_OUT = ["picnic", "orchard", "journey", "supper"]
ADJECTIVES = ["charming", "delightful", "elegant", "agreeable", "pleasing", "handsome", "lively", "splendid"]


def style_line(thing: str, rng: random.Random) -> dict:
    return {
        "prompt": f"Tell me about the {thing}.\n",
        "completion": f"Oh, the {thing} was most {rng.choice(ADJECTIVES)}, I do declare!",
    }


def write_data(directory: Path, n_train: int = 300) -> None:
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    train = [style_line(rng.choice(THINGS), rng) for _ in range(n_train)]
    valid = [style_line(thing, rng) for thing in HELD_OUT for _ in range(2)]
    for name, rows in (("train", train), ("valid", valid)):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--out", help="where to keep data, adapter and fused model (default: a temporary directory)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="lora_style_"))
    write_data(out / "data")

    model, tokenizer = mlx_llama.load(mlx_llama.DEMO_MODEL)
    prompt = f"Tell me about the {HELD_OUT[0]}.\n"
    print("before:", mlx_llama.generate(model, tokenizer, prompt, 16).strip())
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    history = finetune(
        model,
        tokenizer,
        out / "data",
        out / "adapter",
        config,
        TrainingArgs(
            iters=args.iters,
            batch_size=8,
            learning_rate=2e-3,
            lr_schedule="cosine",
            warmup=5,
            steps_per_report=20,
            steps_per_eval=args.iters,
        ),
        mask_prompt=True,
        report=lambda r: print("  ", {k: round(v, 4) for k, v in r.items()}),
    )
    val = [r["val_loss"] for r in history if "val_loss" in r]
    print(f"validation loss {val[0]:.4f} -> {val[-1]:.4f}")

    model, tokenizer = mlx_llama.load(mlx_llama.DEMO_MODEL, adapter_path=out / "adapter")
    for thing in HELD_OUT:
        print("after :", mlx_llama.generate(model, tokenizer, f"Tell me about the {thing}.\n", 16).strip())
    fuse(mlx_llama.DEMO_MODEL, out / "adapter", out / "fused")
    fused, _ = mlx_llama.load(out / "fused")
    print("fused :", mlx_llama.generate(fused, tokenizer, prompt, 16).strip())
    print(f"adapter: {out / 'adapter'}  fused model: {out / 'fused'}")


if __name__ == "__main__":
    main()
