"""Extractive question answering: the demo checkpoint loaded into LlamaForQuestionAnswering.

The model scores every token as the start and the end of the answer span; the best span with
start <= end is decoded. The `qa_outputs` head is freshly initialised (the loader warns), so the span is
arbitrary until the head is trained; the loss shows how training targets are given.
"""

from __future__ import annotations

import argparse

import mlx_llama  # first: sets up the BLAS before MLX loads (Linux)

# isort: split
import mlx.core as mx

DEMO = mlx_llama.DEMO_MODEL
QUESTION = "Who came to Netherfield?"
CONTEXT = "Mr. Bingley came to Netherfield with his two sisters."


def best_span(start: list[float], end: list[float], first: int, max_len: int = 8) -> tuple[int, int]:
    """The (start, end) pair inside the context with the highest start + end score."""
    pairs = [(s, e) for s in range(first, len(start)) for e in range(s, min(s + max_len, len(end)))]
    return max(pairs, key=lambda se: start[se[0]] + end[se[1]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="model directory (default: the bundled demo)")
    args = p.parse_args()

    tokenizer = mlx_llama.LlamaTokenizer.from_pretrained(args.model)
    model = mlx_llama.LlamaForQuestionAnswering.from_pretrained(args.model)
    question_ids = tokenizer.encode(QUESTION)  # <s> + question
    context_ids = tokenizer.encode(CONTEXT, add_special_tokens=False)
    ids = question_ids + context_ids
    out = model(mx.array([ids]))
    s, e = best_span(out.start_logits[0].tolist(), out.end_logits[0].tolist(), first=len(question_ids))
    print(f"question: {QUESTION}\ncontext : {CONTEXT}")
    print(f"span {s}..{e}: {tokenizer.decode(ids[s : e + 1])!r} (untrained head)")

    # Training targets: the token positions of the true answer ("Mr. Bingley": the context's first tokens).
    answer_len = len(tokenizer.encode("Mr. Bingley", add_special_tokens=False))
    start, end = len(question_ids), len(question_ids) + answer_len - 1
    print(f"true span {start}..{end}: {tokenizer.decode(ids[start : end + 1])!r}")
    loss = model(mx.array([ids]), start_positions=[start], end_positions=[end]).loss
    print(f"span loss: {loss.item():.4f}")


if __name__ == "__main__":
    main()
