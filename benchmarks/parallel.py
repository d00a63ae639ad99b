"""Per-rank memory and tokens/s of tensor- and pipeline-parallel generation, against one process.

The driver writes a TinyLlama-shaped random checkpoint (float16; `--layers` of its 22 to keep runs short),
then runs one process, 2 local ranks with `parallel="tensor"` and 2 with `parallel="pipeline"` (ring backend
over 127.0.0.1, MLX_HOSTFILE + MLX_RANK, killed at a deadline), and prints a markdown table. On one machine
the ranks share its cores, so this measures the overhead of the split, not a speed-up.

    python benchmarks/parallel.py --layers 4 --prompt-tokens 64 --new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mlx_llama  # noqa: E402,F401  (before mlx.core: its BLAS set-up comes first)

ROOT = Path(__file__).resolve().parents[1]
TINYLLAMA = dict(
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    num_attention_heads=32,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


def write_checkpoint(directory: Path, layers: int) -> None:
    import mlx.core as mx

    from mlx_llama import LlamaConfig, LlamaForCausalLM

    mx.random.seed(0)
    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=layers, **TINYLLAMA))
    model.set_dtype(mx.float16)
    mx.eval(model.parameters())
    model.save_pretrained(directory)


def worker(mode: str, directory: str, prompt_tokens: int, new_tokens: int) -> None:
    """One rank (or the single process): load, warm up, then time a greedy generation; print a JSON line."""
    import mlx.core as mx

    from mlx_llama.generation.loop import decode
    from mlx_llama.generation.sampling import SamplingParams, TokenChooser
    from mlx_llama.loading import load_model
    from mlx_llama.parallel import parameter_bytes

    start = time.perf_counter()
    model = load_model(directory, parallel=None if mode == "single" else mode)
    load_s = time.perf_counter() - start
    chooser = TokenChooser(SamplingParams.from_temperature(0.0, 0, 1.0, 0.0, 1.0))
    prompt = (mx.arange(prompt_tokens, dtype=mx.int32) * 7919 % 31000 + 100)[None]
    for _ in decode(model, model.make_cache(), prompt[:, :8], chooser, 4):  # warm-up
        pass
    mx.reset_peak_memory()
    times = []
    t0 = time.perf_counter()
    for _ in decode(model, model.make_cache(), prompt, chooser, new_tokens):
        times.append(time.perf_counter())
    rank = 0 if mode == "single" else mx.distributed.init().rank()
    print(
        json.dumps(
            {
                "mode": mode,
                "rank": rank,
                "load_s": load_s,
                "param_bytes": parameter_bytes(model),
                "prefill_tps": prompt_tokens / (times[0] - t0),
                "decode_tps": (len(times) - 1) / (times[-1] - times[0]),
                "peak_mlx": mx.get_peak_memory(),
                "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        ),
        flush=True,
    )


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(mode: str, ranks: int, args: argparse.Namespace, model: Path, directory: Path, timeout: float) -> list[dict]:
    """Start the ranks; kill them all when one fails or at the deadline."""
    hostfile = directory / "hosts.json"
    hostfile.write_text(json.dumps([f"127.0.0.1:{p}" for p in free_ports(ranks)]))
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--model",
        str(model),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--new-tokens",
        str(args.new_tokens),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if ranks > 1:  # a one-entry hostfile would make the ring backend wait for peers
        env["MLX_HOSTFILE"] = str(hostfile)
    procs = [
        subprocess.Popen(
            cmd, env={**env, "MLX_RANK": str(r)}, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        for r in range(ranks)
    ]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not all(p.poll() is not None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                raise SystemExit(f"{mode}: a rank failed")
            time.sleep(0.2)
        codes = [p.poll() for p in procs]
        if codes != [0] * ranks:
            raise SystemExit(f"{mode}: exit codes {codes} (None: still running after {timeout:.0f} s)")
        return [json.loads(p.stdout.read().strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=170.0, help="seconds per configuration")
    parser.add_argument("--checkpoint", type=Path, help="reuse (or create) the checkpoint here instead of a temp dir")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.prompt_tokens, args.new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        model = args.checkpoint or directory / "model"
        if not (model / "config.json").is_file():
            write_checkpoint(model, args.layers)
        rows = [
            r
            for mode, n in (("single", 1), ("tensor", 2), ("pipeline", 2))
            for r in launch(mode, n, args, model, directory, args.timeout)
        ]
    gb = 1e9
    print("| mode | rank | parameters | peak MLX mem | max RSS | load s | prefill tok/s | decode tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['rank']} | {r['param_bytes'] / gb:.2f} GB | {r['peak_mlx'] / gb:.2f} GB | "
            f"{r['max_rss'] / gb:.2f} GB | {r['load_s']:.1f} | {r['prefill_tps']:.1f} | {r['decode_tps']:.2f} |"
        )


if __name__ == "__main__":
    main()
