"""Convert a checkpoint: here the bundled demo (a Transformers-format directory) to a 4-bit quantized MLX one.

The same as `mlx-llama convert SRC OUT --quantize` (or `python convert.py ...`). SRC can be a Transformers
directory, an original Meta checkpoint (params.json + consolidated.*.pth) or a Hub id; the output loads
with `mlx_llama.load` and the CLI's `--model`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlx_llama  # first: sets up the BLAS before MLX loads (Linux)

DEMO = mlx_llama.DEMO_MODEL


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="source: directory or Hub id (default: the bundled demo)")
    p.add_argument("--out", help="output directory (default: a temporary one, removed at the end)")
    p.add_argument("--prompt", default="Her mother was")
    p.add_argument("--max-tokens", type=int, default=20)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "demo-4bit"
        mlx_llama.convert_checkpoint(args.model, out, quantize=True, q_bits=4, q_group_size=64, quiet=True)
        print(f"wrote {out}: {sorted(f.name for f in out.iterdir())}")
        if Path(args.model).is_dir():
            print(f"weights: {size_mb(Path(args.model)):.1f} MB -> {size_mb(out):.1f} MB")
        for name, path in (("original", args.model), ("4-bit", out)):
            model, tokenizer = mlx_llama.load(path)
            text = mlx_llama.generate(model, tokenizer, args.prompt, args.max_tokens)
            print(f"{name:>8}: {args.prompt} {text}")


if __name__ == "__main__":
    main()
