"""Generate text: greedy, then sampled. Runs offline on the bundled demo model.

python examples/generate.py
python examples/generate.py --model TinyLlama/TinyLlama-1.1B-Chat-v1.0 --prompt "The capital of France is"
"""

from __future__ import annotations

import argparse

import mlx_llama  # first: sets up the BLAS for MLX on Linux

DEMO = mlx_llama.DEMO_MODEL


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="model directory or Hub id (default: the bundled demo)")
    p.add_argument("--prompt", default="It was a fine morning, and Elizabeth")
    p.add_argument("--max-tokens", type=int, default=30)
    args = p.parse_args()

    model, tokenizer = mlx_llama.load(args.model)
    print("prompt :", args.prompt)
    greedy = mlx_llama.generate(model, tokenizer, args.prompt, args.max_tokens)  # temperature 0 = greedy
    print("greedy :", greedy)
    sampled = mlx_llama.generate(model, tokenizer, args.prompt, args.max_tokens, temperature=0.8, top_p=0.95, seed=0)
    print("sampled:", sampled)

    # The Transformers-style call works too: ids in, prompt + new ids out.
    ids = tokenizer(args.prompt, return_tensors="mlx")["input_ids"]
    out = model.generate(ids, max_new_tokens=args.max_tokens)
    print("model.generate:", tokenizer.decode(out[0].tolist(), skip_special_tokens=True))


if __name__ == "__main__":
    main()
