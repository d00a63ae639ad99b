"""Fine-tune a sequence-classification head for a few steps with `nn.value_and_grad`, body frozen.

Task: tell questions from statements. The demo checkpoint is loaded into LlamaForSequenceClassification
(new `score` head, the loader warns); only the head trains, so this takes seconds on a CPU. The loss
falls and held-out sentences are then classified; pass --train-body to fine-tune the whole model.
"""

from __future__ import annotations

import argparse

import mlx_llama  # first: sets up the BLAS before MLX loads (Linux)

# isort: split
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

DEMO = mlx_llama.DEMO_MODEL
LABELS = {0: "statement", 1: "question"}
TRAIN = [
    ("She walked to the village in the rain.", 0),
    ("Did she walk to the village?", 1),
    ("The letter arrived this morning.", 0),
    ("When did the letter arrive?", 1),
    ("He was a very agreeable young man.", 0),
    ("Was he an agreeable young man?", 1),
    ("They dined with the Westons on Tuesday.", 0),
    ("Where did they dine on Tuesday?", 1),
    ("Her sister had gone to London.", 0),
    ("Why had her sister gone to London?", 1),
    ("The ball was to be on Thursday.", 0),
    ("Is the ball on Thursday?", 1),
    ("My aunt will not approve of it.", 0),
    ("Will your aunt approve of it?", 1),
    ("The carriage was at the door.", 0),
    ("Who is at the door?", 1),
]
HELD_OUT = [
    ("Have you read the letter?", 1),
    ("Mr. Knightley called yesterday.", 0),
    ("What will your mother say?", 1),
    ("The garden was very pretty.", 0),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="model directory (default: the bundled demo)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-body", action="store_true", help="train every weight, not only the head")
    args = p.parse_args()

    mx.random.seed(0)  # the new head's initialisation
    tokenizer = mlx_llama.LlamaTokenizer.from_pretrained(args.model)
    tokenizer.pad_token = tokenizer.eos_token  # for batching; pooling reads the last non-pad token
    model = mlx_llama.LlamaForSequenceClassification.from_pretrained(
        args.model, id2label=LABELS, pad_token_id=tokenizer.pad_token_id
    )
    if not args.train_body:
        model.freeze()
        model.score.unfreeze()

    def encode(pairs):
        batch = tokenizer([text for text, _ in pairs], padding=True, return_tensors="mlx")
        return batch["input_ids"], batch["attention_mask"], mx.array([label for _, label in pairs])

    ids, mask, labels = encode(TRAIN)
    loss_and_grad = nn.value_and_grad(model, lambda m: m(ids, attention_mask=mask, labels=labels).loss)
    optimizer = optim.AdamW(learning_rate=args.lr, weight_decay=0.0)
    model.train()
    first = None
    for step in range(1, args.steps + 1):
        loss, grads = loss_and_grad(model)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss)
        first = loss.item() if first is None else first
        if step == 1 or step % 5 == 0:
            print(f"step {step:3d}  loss {loss.item():.4f}")
    model.eval()
    print(f"training loss {first:.4f} -> {loss.item():.4f}")

    ids, mask, labels = encode(HELD_OUT)
    predicted = model(ids, attention_mask=mask).logits.argmax(axis=-1).tolist()
    for (text, gold), guess in zip(HELD_OUT, predicted, strict=True):
        print(f"  {text!r}: {LABELS[guess]} (true: {LABELS[gold]})")
    print(f"held-out accuracy {sum(g == t for (_, t), g in zip(HELD_OUT, predicted, strict=True))}/{len(HELD_OUT)}")


if __name__ == "__main__":
    main()
