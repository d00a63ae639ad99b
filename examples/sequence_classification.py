"""Sequence classification: the demo checkpoint loaded into LlamaForSequenceClassification.

The checkpoint has no `score` head, so the loader initialises one and warns: the scores below are
untrained (see finetune_classifier.py to train the head). The score of a sequence is read at its last
non-pad token, so batches need a pad token id in the config.
"""

from __future__ import annotations

import argparse

import mlx_llama  # first: sets up the BLAS for MLX on Linux

DEMO = mlx_llama.DEMO_MODEL
TEXTS = ["She was delighted with the ball.", "He was very angry and left the house at once."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="model directory (default: the bundled demo)")
    args = p.parse_args()

    tokenizer = mlx_llama.LlamaTokenizer.from_pretrained(args.model)
    tokenizer.pad_token = tokenizer.eos_token  # the demo has no pad token; eos never occurs inside these texts
    labels = {0: "negative", 1: "positive"}
    model = mlx_llama.LlamaForSequenceClassification.from_pretrained(
        args.model, id2label=labels, pad_token_id=tokenizer.pad_token_id
    )
    batch = tokenizer(TEXTS, padding=True, return_tensors="mlx")
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"])
    print("logits shape:", out.logits.shape)  # [batch, num_labels]
    for text, row in zip(TEXTS, out.logits.tolist(), strict=True):
        best = max(range(len(row)), key=row.__getitem__)
        print(f"{text!r}: logits {[round(x, 3) for x in row]} -> {labels[best]} (untrained head)")
    loss = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=[1, 0]).loss
    print(f"cross-entropy against labels [positive, negative]: {loss.item():.4f}")


if __name__ == "__main__":
    main()
