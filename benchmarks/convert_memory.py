"""Peak resident memory of converting a synthetic Meta checkpoint (>= 2 GB, 4 bf16 shards), run by hand.

    .venv/bin/python benchmarks/convert_memory.py [--layers 4] [--keep]

Writes a LLaMA-7B-shaped checkpoint (dim 4096, 32 heads, FFN 11008, vocab 32000, `--layers` layers) as
consolidated.00-03.pth with torch, then converts it in child processes (`python convert.py`, float16 and
4-bit) and reports each child's peak RSS (getrusage of the child) and wall time next to the largest merged
tensor. The synthetic checkpoint and the outputs are deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DIM, HEADS, FFN, VOCAB, SHARDS = 4096, 32, 11008, 32000, 4


def write_checkpoint(directory: Path, layers: int) -> int:
    """Random-looking bf16 shards split as Meta's model parallelism does; returns the bytes written."""
    directory.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    block = torch.randn(1 << 20, generator=gen).to(torch.bfloat16)  # tiled: fast to make, not all zeros

    def tensor(rows: int, cols: int) -> torch.Tensor:
        n = rows * cols
        return block.repeat(n // block.numel() + 1)[:n].view(rows, cols).clone()

    shapes = {"tok_embeddings.weight": (VOCAB, DIM // SHARDS), "output.weight": (VOCAB // SHARDS, DIM)}
    for i in range(layers):
        for name in ("wq", "wk", "wv"):
            shapes[f"layers.{i}.attention.{name}.weight"] = (DIM // SHARDS, DIM)
        shapes[f"layers.{i}.attention.wo.weight"] = (DIM, DIM // SHARDS)
        shapes[f"layers.{i}.feed_forward.w1.weight"] = (FFN // SHARDS, DIM)
        shapes[f"layers.{i}.feed_forward.w3.weight"] = (FFN // SHARDS, DIM)
        shapes[f"layers.{i}.feed_forward.w2.weight"] = (DIM, FFN // SHARDS)
    total = 0
    for s in range(SHARDS):
        shard = {name: tensor(*shape) for name, shape in shapes.items()}
        shard["norm.weight"] = torch.ones(DIM, dtype=torch.bfloat16)
        for i in range(layers):
            shard[f"layers.{i}.attention_norm.weight"] = torch.ones(DIM, dtype=torch.bfloat16)
            shard[f"layers.{i}.ffn_norm.weight"] = torch.ones(DIM, dtype=torch.bfloat16)
        path = directory / f"consolidated.{s:02d}.pth"
        torch.save(shard, path)
        total += path.stat().st_size
        del shard
    params = {"dim": DIM, "n_layers": layers, "n_heads": HEADS, "multiple_of": 256, "norm_eps": 1e-5, "vocab_size": -1}
    (directory / "params.json").write_text(json.dumps(params))
    return total


def measure(args: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of one child process, as the child itself reports it."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], check=True, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return int(proc.stdout.strip().splitlines()[-1].split()[-1]) / 1e6, seconds


# The child: `import` only (the baseline), or `python convert.py ARGS --quiet`; then its own peak RSS in
# bytes. On Linux that is VmHWM, the high-water mark of this process's memory map (ru_maxrss would also
# count the parent's RSS at fork time, which exec carries over).
_CHILD = """
import resource, runpy, sys
if sys.argv[1:] == ["import"]:
    import mlx_llama.convert
else:
    sys.argv = ["convert.py", *sys.argv[1:], "--quiet"]
    try:
        runpy.run_path("convert.py", run_name="__main__")
    except SystemExit as exit:
        if exit.code:
            raise
try:
    status = open("/proc/self/status").read()
    peak = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) * 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
print("peak", peak)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None, help="where to put the synthetic checkpoint")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="convert-mem-", dir=args.workdir))
    try:
        src = work / "meta"
        t0 = time.perf_counter()
        size = write_checkpoint(src, args.layers)
        print(f"synthetic checkpoint: {size / 1e9:.2f} GB in {SHARDS} shards ({time.perf_counter() - t0:.0f} s)")
        largest = VOCAB * DIM * 2 / 1e6
        print(f"largest merged tensor: tok_embeddings/output {VOCAB}x{DIM} bf16 = {largest:.0f} MB")
        baseline, _ = measure(["import"])
        print(f"baseline (interpreter + imports): {baseline:.0f} MB")
        cases = {"float16": [], "q4": ["-q", "--q-bits", "4", "--q-group-size", "64"]}
        for name, extra in cases.items():
            out = work / f"out-{name}"
            peak, seconds = measure([str(src), str(out), *extra])
            out_size = sum(p.stat().st_size for p in out.iterdir()) / 1e9
            print(f"{name}: peak RSS {peak:.0f} MB, {seconds:.1f} s, output {out_size:.2f} GB")
            shutil.rmtree(out)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
