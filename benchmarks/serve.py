"""Serving benchmark: aggregate tokens/s and time to first token at concurrency 1/2/4/8, and prompt-cache TTFT.

    PYTHONPATH=$PWD python3 benchmarks/serve.py throughput [--model DIR] [--server mlx-llama|mlx-lm]
    PYTHONPATH=$PWD python3 benchmarks/serve.py prompt-cache [--prefix 1500]

`throughput` sends the same 8 requests (fixed length: eos is banned with logit_bias) at each concurrency, so
"concurrency 1" is one-at-a-time and the ratio is what continuous batching buys. `prompt-cache` uses a tiny
random model with a 4,096-token context (the demo model's is 256): TTFT of a request with a cold
1,500-token prefix vs one sharing that prefix with the previous request. Servers run as subprocesses on a
free 127.0.0.1 port and are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Once upon a time",
    "The house was",
    "She said that",
    "In the morning the",
    "It was a dark",
    "He",
    "My dear sister, I",
    "The weather",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model: str | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "mlx-llama":
        cmd = [sys.executable, "-m", "mlx_llama", "serve", "--port", str(port), "--quiet", *extra]
        cmd += ["--model", model] if model else []
    else:
        cmd = [sys.executable, "-m", "mlx_lm.server", "--model", model, "--port", str(port), "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, base
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{kind} server exited with {proc.returncode}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def one(client: openai.OpenAI, prompt, max_tokens: int, model: str) -> tuple[float, int]:
    """(seconds to the first text, completion tokens) of one streamed completion."""
    start_t = time.perf_counter()
    first, tokens = None, 0
    stream = client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, logit_bias={"2": -100}, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            tokens += 1  # one chunk per token (both servers stream token by token)
            if first is None:
                first = time.perf_counter() - start_t
    return first or 0.0, tokens


def throughput(args) -> None:
    proc, base = start(args.server, args.model, [])
    client = openai.OpenAI(base_url=base, api_key="none", timeout=300, max_retries=0)
    name = args.model or "demo"
    try:
        one(client, "warm up", 8, name)
        rows = []
        for concurrency in (1, 2, 4, 8):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(lambda p: one(client, p, args.max_tokens, name), PROMPTS))
            wall = time.perf_counter() - t0
            tokens = sum(r[1] for r in results)
            ttft = sorted(r[0] for r in results)[len(results) // 2]
            rows.append((concurrency, tokens / wall, ttft))
            print(
                f"{args.server} concurrency {concurrency}: {tokens} tokens in {wall:.2f} s = "
                f"{tokens / wall:.1f} tokens/s aggregate, median TTFT {ttft * 1000:.0f} ms",
                flush=True,
            )
        print(f"speed-up at 8 vs 1: {rows[-1][1] / rows[0][1]:.2f}x")
    finally:
        stop(proc)


def prompt_cache(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(ROOT / "tests"))
        from support.server import tiny_long_context_model

        model = str(tiny_long_context_model(Path(tmp)))
        proc, base = start(args.server, model, [])
        client = openai.OpenAI(base_url=base, api_key="none", timeout=300, max_retries=0)
        try:
            one(client, [1, 5, 6], 2, model)
            cold, warm = [], []
            for trial in range(args.trials):
                prefix = [1] + [3 + (trial * 7919 + i * 104729) % 1990 for i in range(args.prefix)]
                cold.append(one(client, prefix + [10], 1, model)[0])
                warm.append(one(client, prefix + [11, 12], 1, model)[0])
            c, w = sorted(cold)[len(cold) // 2], sorted(warm)[len(warm) // 2]
            print(
                f"{args.server} {args.prefix}-token shared prefix: TTFT cold {c * 1000:.0f} ms, "
                f"cached {w * 1000:.0f} ms, ratio {w / c:.2f}"
            )
        finally:
            stop(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["throughput", "prompt-cache"])
    p.add_argument("--model", help="model directory (default: the demo model)")
    p.add_argument("--server", choices=["mlx-llama", "mlx-lm"], default="mlx-llama")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--prefix", type=int, default=1500)
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()
    if args.server == "mlx-lm" and args.model is None and args.what == "throughput":
        args.model = str(ROOT / "mlx_llama" / "assets" / "demo")
    print(
        f"# {platform.platform()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    (throughput if args.what == "throughput" else prompt_cache)(args)


if __name__ == "__main__":
    main()
