"""Stream a generation token by token (text is detokenized incrementally), then print the statistics.

python examples/stream.py --prompt "Mr. Darcy" --max-tokens 60 --temperature 0.7
"""

from __future__ import annotations

import argparse

import mlx_llama  # first: sets up the BLAS for MLX on Linux

DEMO = mlx_llama.DEMO_MODEL


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="model directory or Hub id (default: the bundled demo)")
    p.add_argument("--prompt", default="Mr. Darcy")
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.7)
    args = p.parse_args()

    model, tokenizer = mlx_llama.load(args.model)
    print(f"prompt: {args.prompt}\ncontinuation: ", end="", flush=True)
    last = None
    for last in mlx_llama.stream_generate(
        model, tokenizer, args.prompt, args.max_tokens, temperature=args.temperature, seed=0
    ):
        print(last.text, end="", flush=True)  # each response carries only the new piece of text
    print()
    if last is not None:
        print(
            f"[{last.generation_tokens} tokens, {last.generation_tps:.1f} tokens/s, "
            f"finish reason: {last.finish_reason}]"
        )


if __name__ == "__main__":
    main()
