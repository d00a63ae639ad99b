"""LoRA / QLoRA training speed and peak memory of `mlx-llama lora` against `mlx_lm lora`, same model and data.

The model has the TinyLlama-1.1B shape (hidden 2048, 32 heads, 4 KV heads, MLP 5632, vocabulary 32000) with
random weights, but fewer decoder layers (`--layers`, default 2) so that a run fits in a minute or two on a
small CPU machine; float32 for LoRA and affine 4-bit (group 64) for QLoRA. Both tools train rank-8 adapters
(scale alpha/r = 2) on all seven projections of every layer, AdamW, the same batches of ~64-token lines.

Each tool runs in its own process (`--run`), with the optimized BLAS mlx_llama sets up. Figures are the
tools' own reports for the last report window (so compilation and warm-up are excluded): tokens/s over real
(non-pad) tokens and `mx.get_peak_memory()`. Prints a markdown table.

    python benchmarks/lora.py --layers 2 --iters 8 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_attention_heads=32,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    vocab_size=32000,
    rms_norm_eps=1e-5,
)
TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
WORDS = (
    "the of and to a in was her she he it had that as for you not with my be his at on they have which "
    "but could would very said all so by mr been were been this no an from emma harriet elizabeth"
).split()


def make_models(work: Path, layers: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    import mlx_llama

    fp32, q4 = work / "fp32", work / "q4"
    config = mlx_llama.LlamaConfig(num_hidden_layers=layers, **SHAPE)
    model = mlx_llama.LlamaForCausalLM(config)
    model.save_pretrained(fp32)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(mlx_llama.DEMO_MODEL / name, fp32 / name)
    mlx_llama.convert_checkpoint(fp32, q4, dtype="float32", quantize=True, q_bits=4, q_group_size=64)
    return fp32, q4


def make_data(directory: Path, n_train: int = 64, n_valid: int = 8, words: int = 48) -> None:
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid)):
        rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(words)) + "."} for _ in range(n)]
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_tool(tool: str, model: Path, data: Path, adapters: Path, args: argparse.Namespace) -> dict:
    """One training run in a fresh process; returns the last report's tokens/s and peak memory (GB)."""
    common = [
        "--model",
        str(model),
        "--data",
        str(data),
        "--adapter-path",
        str(adapters),
        "--iters",
        str(args.iters),
        "--batch-size",
        str(args.batch_size),
        "--learning-rate",
        "1e-4",
        "--steps-per-report",
        str(max(args.iters // 2, 1)),
        "--steps-per-eval",
        str(10 * args.iters),
        "--val-batches",
        "1",
    ]
    if tool == "ours":
        cmd = [
            sys.executable,
            "-m",
            "mlx_llama",
            "lora",
            *common,
            "--rank",
            "8",
            "--alpha",
            "16",
            "--target-modules",
            TARGETS,
        ]
        pattern = r"([\d.]+) tokens/s, peak memory ([\d.]+) GB"
    else:
        config = adapters.parent / "mlx_lm_lora.yaml"
        config.write_text("lora_parameters:\n  rank: 8\n  scale: 2.0\n  dropout: 0.0\n")
        code = (
            "import importlib.util, sys; "
            f"s = importlib.util.spec_from_file_location('b', {str(ROOT / 'mlx_llama' / '_backend.py')!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); m.setup(); "
            "from mlx_lm.lora import main; sys.argv = ['mlx_lm.lora'] + sys.argv[1:]; main()"
        )
        cmd = [
            sys.executable,
            "-c",
            code,
            "--train",
            *common,
            "--num-layers",
            "-1",
            "--optimizer",
            "adamw",
            "-c",
            str(config),
        ]
        pattern = r"Tokens/sec ([\d.]+), .*Peak mem ([\d.]+) GB"
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=args.timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        return {"tokens_per_s": float("nan"), "peak_gb": float("nan"), "note": f"timed out after {args.timeout} s"}
    found = re.findall(pattern, proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{tool} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    tokens_per_s, peak = map(float, found[-1])
    return {"tokens_per_s": tokens_per_s, "peak_gb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--timeout", type=int, default=300, help="seconds per run")
    p.add_argument("--tools", default="ours,mlx_lm")
    p.add_argument("--kinds", default="lora,qlora")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lora_bench_") as tmp:
        work = Path(tmp)
        fp32, q4 = make_models(work, args.layers)
        make_data(work / "data")
        rows = []
        for kind in args.kinds.split(","):
            for tool in args.tools.split(","):
                model = fp32 if kind == "lora" else q4
                r = run_tool(tool, model, work / "data", work / f"{tool}-{kind}", args)
                rows.append((kind, tool, r))
                print(f"{kind} {tool}: {r}", file=sys.stderr, flush=True)
    print("| run | tool | training tokens/s | peak memory (GB) | note |\n|---|---|---:|---:|---|")
    for kind, tool, r in rows:
        name = "mlx-llama lora" if tool == "ours" else "mlx_lm lora"
        print(f"| {kind} | {name} | {r['tokens_per_s']:.1f} | {r['peak_gb']:.2f} | {r.get('note', '')} |")


if __name__ == "__main__":
    main()
