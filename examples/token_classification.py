"""Token classification (e.g. named entities): the demo checkpoint loaded into LlamaForTokenClassification.

One label per token. The `score` head is freshly initialised (the loader warns), so the tags are arbitrary
until it is trained; the loss line shows the label format (-100 = ignored position, e.g. the `<s>` token).
"""

from __future__ import annotations

import argparse
import re

import mlx_llama  # first: sets up the BLAS before MLX loads (Linux)

DEMO = mlx_llama.DEMO_MODEL
LABELS = {0: "O", 1: "PERSON", 2: "PLACE"}
TEXT = "Emma walked to Highbury with Harriet."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="model directory (default: the bundled demo)")
    args = p.parse_args()

    tokenizer = mlx_llama.LlamaTokenizer.from_pretrained(args.model)
    model = mlx_llama.LlamaForTokenClassification.from_pretrained(args.model, id2label=LABELS)
    batch = tokenizer(TEXT, return_tensors="mlx")
    out = model(batch["input_ids"])
    print("logits shape:", out.logits.shape)  # [batch, tokens, num_labels]
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    predicted = out.logits[0].argmax(axis=-1).tolist()
    for token, label in zip(tokens, predicted, strict=True):
        print(f"  {token:>12}  {LABELS[label]}")

    # Gold tags for training, one per token: every piece of a word gets the word's tag; -100 (ignored) for <s>.
    gold = [-100] + [word_tag(tokenizer, i) for i in range(len(tokens) - 1)]
    print("gold:", [LABELS.get(t, "-") for t in gold])
    print(f"loss against the gold tags: {model(batch['input_ids'], labels=[gold]).loss.item():.4f}")


def word_tag(tokenizer: mlx_llama.LlamaTokenizer, index: int) -> int:
    """The tag of the word that text token `index` belongs to: the first word whose end covers it."""
    tags = {"Emma": 1, "Harriet": 1, "Highbury": 2}
    for match in re.finditer(r"\w+|[^\w\s]", TEXT):
        if len(tokenizer.encode(TEXT[: match.end()], add_special_tokens=False)) > index:
            return tags.get(match.group(), 0)
    raise ValueError(f"token {index} is past the end of the text")


if __name__ == "__main__":
    main()
