"""Generation speed of mlx-llama against mlx-lm (and llama.cpp) on the same random-weight checkpoint.

Measures prefill tokens/s (a 512-token prompt), decode tokens/s (128 new tokens), peak memory and load time.
Every measured run is its own process (`--run IMPL`); the driver makes the checkpoints, interleaves the runs,
takes medians and prints a markdown table with ratios against mlx-lm. Setup and commands: benchmarks/README.md.

All implementations are timed the same way, by this script, around their streaming generators: prefill =
prompt tokens / time to the first new token; decode = (new tokens - 1) / time from the first to the last.
Each process first runs a short warm-up generation, so one-time start-up costs are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKEND = ROOT / "mlx_llama" / "_backend.py"
BENCH_PYTHON = ROOT / ".bench-venv" / "bin" / "python"

SHAPES = {
    # A smoke-test shape: runs end to end in seconds.
    "tiny": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    ),
    "tinyllama": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
    "llama2-7b-4l": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=4,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    ),
}
DTYPES = ("float32", "bfloat16", "float16", "q4")  # q4: affine 4-bit, group 64, float16 scales (mlx-lm's format)
IMPLS = ("ours", "ours-auto", "mlx_lm", "llamacpp")
VOCAB = 32000
Q_GROUP, Q_BITS = 64, 4


# ---- checkpoints --------------------------------------------------------------------------------------------


def tokenizer_model() -> Path:
    """The Llama-compatible 32000-token sentencepiece model that ships with mistral-common."""
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"


def config_for(shape: str, dtype: str) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float16" if dtype == "q4" else dtype,
        **SHAPES[shape],
    }
    if dtype == "q4":
        config["quantization"] = config["quantization_config"] = {"group_size": Q_GROUP, "bits": Q_BITS}
    return config


def random_weights(config: dict, seed: int = 0) -> dict:
    """Float32 random weights in Transformers' names (normal, std 0.02; norms 1)."""
    import mlx.core as mx

    mx.random.seed(seed)
    h, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    shapes = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (h, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, h),
                p + "mlp.gate_proj.weight": (f, h),
                p + "mlp.up_proj.weight": (f, h),
                p + "mlp.down_proj.weight": (h, f),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    return {k: mx.ones(s) if len(s) == 1 else mx.random.normal(s) * 0.02 for k, s in shapes.items()}


def cast_or_quantize(weights: dict, dtype: str) -> dict:
    import mlx.core as mx

    if dtype != "q4":
        return {k: w.astype(getattr(mx, dtype)) for k, w in weights.items()}
    out = {}
    for k, w in weights.items():  # every matrix, embedding included, as mlx-lm's converter does
        w = w.astype(mx.float16)
        if w.ndim == 2 and w.shape[1] % Q_GROUP == 0:
            q, scales, biases = mx.quantize(w, group_size=Q_GROUP, bits=Q_BITS)
            stem = k.removesuffix(".weight")
            out.update({k: q, f"{stem}.scales": scales, f"{stem}.biases": biases})
        else:
            out[k] = w
    return out


def write_tokenizer(folder: Path) -> None:
    """tokenizer.model (ours, llama.cpp) plus tokenizer.json/tokenizer_config.json (mlx-lm's AutoTokenizer)."""
    from transformers import LlamaTokenizerFast

    tok = LlamaTokenizerFast(vocab_file=str(tokenizer_model()), legacy=True, add_bos_token=True)
    tok.save_pretrained(folder)
    if not (folder / "tokenizer.model").exists():
        (folder / "tokenizer.model").write_bytes(tokenizer_model().read_bytes())


def make_checkpoint(workdir: Path, shape: str, dtype: str) -> Path:
    """`workdir/<shape>-<dtype>/` in Transformers' layout; reused when already complete."""
    import mlx.core as mx

    folder = workdir / f"{shape}-{dtype}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = config_for(shape, dtype)
    weights = cast_or_quantize(random_weights(config), dtype)
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(folder)
    (folder / ".complete").write_text("")
    return folder


# ---- one measured run (its own process) ---------------------------------------------------------------------


def prompt_ids(n: int, seed: int = 0) -> list[int]:
    """BOS then random ids from the ordinary vocabulary: the same prompt for every implementation."""
    import random

    rng = random.Random(seed)
    return [1] + [rng.randrange(3, VOCAB) for _ in range(n - 1)]


def time_stream(stream) -> tuple[float, float, int]:
    """Consume a token stream; return (time to first token, time first->last, tokens)."""
    start = time.perf_counter()
    first = last = start
    n = 0
    for n, _ in enumerate(stream, start=1):
        last = time.perf_counter()
        if n == 1:
            first = last
    return first - start, last - first, n


def load_blas() -> str | None:
    """The same BLAS set-up mlx_llama does at import, for an implementation that does not import mlx_llama."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mlx_llama_backend", BACKEND)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.setup()


def run_mlx(impl: str, model_dir: Path, dtype: str, prompt: list[int], new_tokens: int) -> dict:
    if impl == "mlx_lm":
        blas = load_blas()
        import mlx.core as mx
        from mlx_lm import load, stream_generate

        start = time.perf_counter()
        model, tokenizer = load(str(model_dir))
        mx.eval(model.parameters())
        load_s = time.perf_counter() - start
        tokenizer.eos_token_ids = []  # random weights: never stop early

        def generate(ids: list[int], n: int):
            return stream_generate(model, tokenizer, ids, max_tokens=n)
    else:
        import mlx_llama  # before mlx.core: its import sets up the BLAS

        blas = mlx_llama._backend.loaded_library
        import mlx.core as mx

        try:
            from mlx_llama import load, stream_generate
        except ImportError:  # until the package root re-exports them
            from mlx_llama.generation.api import stream_generate
            from mlx_llama.loading import load

        requested = None if impl == "ours-auto" else ("float16" if dtype == "q4" else dtype)
        start = time.perf_counter()
        model, tokenizer = load(model_dir, dtype=requested)
        mx.eval(model.parameters())
        load_s = time.perf_counter() - start

        def generate(ids: list[int], n: int):
            return stream_generate(model, tokenizer, ids, max_tokens=n, eos_token_id=[])

    time_stream(generate(prompt[:16], 4))  # warm-up
    mx.reset_peak_memory()
    ttft, decode_s, n = time_stream(generate(prompt, new_tokens))
    return {
        "load_s": load_s,
        "ttft_s": ttft,
        "decode_s": decode_s,
        "new_tokens": n,
        "peak_mlx_gb": mx.get_peak_memory() / 1e9,
        "blas": blas,
    }


def gguf_path(model_dir: Path) -> Path:
    return model_dir.parent / f"{model_dir.name}.gguf"


def run_llamacpp(model_dir: Path, prompt: list[int], new_tokens: int, extra_bufts: bool, threads: int) -> dict:
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as low_level

    if not extra_bufts:  # llama-cpp-python's Llama() has no argument for it
        defaults = low_level.llama_model_default_params

        def without_extra_bufts():
            params = defaults()
            params.use_extra_bufts = False
            return params

        low_level.llama_model_default_params = without_extra_bufts

    start = time.perf_counter()
    llm = Llama(
        str(gguf_path(model_dir)),
        n_ctx=len(prompt) + new_tokens + 16,
        n_batch=len(prompt),
        n_threads=threads,
        verbose=False,
    )
    load_s = time.perf_counter() - start

    def generate(ids: list[int], n: int):
        llm.reset()
        for i, token in enumerate(llm.generate(ids, top_k=1, temp=0.0, reset=True)):
            yield token
            if i + 1 == n:
                return

    time_stream(generate(prompt[:16], 4))
    ttft, decode_s, n = time_stream(generate(prompt, new_tokens))
    return {
        "load_s": load_s,
        "ttft_s": ttft,
        "decode_s": decode_s,
        "new_tokens": n,
        "peak_mlx_gb": None,
        "blas": None,
        "extra_bufts": extra_bufts,
    }


def run_one(args: argparse.Namespace) -> None:
    prompt = prompt_ids(args.prompt_tokens)
    model_dir = Path(args.model)
    if args.run == "llamacpp":
        result = run_llamacpp(model_dir, prompt, args.new_tokens, not args.no_extra_bufts, args.llamacpp_threads)
    else:
        result = run_mlx(args.run, model_dir, args.dtype, prompt, args.new_tokens)
    result.update(
        impl=args.run,
        dtype=args.dtype,
        prompt_tokens=len(prompt),
        prefill_tps=len(prompt) / result["ttft_s"],
        decode_tps=(result["new_tokens"] - 1) / max(result["decode_s"], 1e-9),
        max_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    )
    print(json.dumps(result))


# ---- llama.cpp's GGUF (run with the Python that has llama-cpp-python and gguf) ------------------------------


def make_gguf(args: argparse.Namespace) -> None:
    """`model_dir.gguf` from the float32 checkpoint of the same shape (the same random weights), cast or
    quantized (Q4_0, llama.cpp's own 4-bit format, for q4) by llama.cpp's conventions."""
    import gguf
    import numpy as np
    import sentencepiece as spm
    from safetensors.numpy import load_file

    model_dir = Path(args.model)
    out = gguf_path(model_dir)
    if out.exists():
        return
    source = model_dir.parent / f"{model_dir.name.rsplit('-', 1)[0]}-float32"
    config = json.loads((source / "config.json").read_text())
    weights = load_file(str(source / "model.safetensors"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    kinds = {
        "float32": gguf.GGMLQuantizationType.F32,
        "float16": gguf.GGMLQuantizationType.F16,
        "bfloat16": gguf.GGMLQuantizationType.BF16,
        "q4": gguf.GGMLQuantizationType.F16,
    }
    file_types = {
        "float32": gguf.LlamaFileType.ALL_F32,
        "float16": gguf.LlamaFileType.MOSTLY_F16,
        "bfloat16": gguf.LlamaFileType.MOSTLY_BF16,
        "q4": gguf.LlamaFileType.MOSTLY_F16,
    }
    target = kinds[args.dtype]
    staging = out.with_suffix(".f16.gguf") if args.dtype == "q4" else out.with_suffix(".tmp")

    writer = gguf.GGUFWriter(str(staging), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_file_type(file_types[args.dtype])
    sp = spm.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    types = [
        gguf.TokenType.UNKNOWN
        if sp.is_unknown(i)
        else gguf.TokenType.CONTROL
        if sp.is_control(i)
        else gguf.TokenType.BYTE
        if sp.is_byte(i)
        else gguf.TokenType.NORMAL
        for i in range(sp.vocab_size())
    ]
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i).encode() for i in range(sp.vocab_size())])
    writer.add_token_scores([sp.get_score(i) for i in range(sp.vocab_size())])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def unpermute(w: np.ndarray, n: int) -> np.ndarray:
        """Transformers' rotate-half q/k row order -> the interleaved order llama.cpp's llama graph expects."""
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for name, w in weights.items():
        if name in names:
            new = names[name]
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            new = f"blk.{layer}.{parts[rest.removesuffix('.weight')]}.weight"
            if rest.startswith("self_attn.q_proj"):
                w = unpermute(w, heads)
            elif rest.startswith("self_attn.k_proj"):
                w = unpermute(w, kv_heads)
        if w.ndim == 1 or target == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(new, w.astype(np.float32))
        elif target == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(new, w.astype(np.float16))
        else:
            writer.add_tensor(new, gguf.quants.quantize(w, target), raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if args.dtype == "q4":
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        if llama_cpp.llama_model_quantize(str(staging).encode(), str(out).encode(), params) != 0:
            raise SystemExit(f"llama.cpp could not quantize {staging}")
        staging.unlink()
    else:
        staging.rename(out)


# ---- driver -------------------------------------------------------------------------------------------------


def python_for(impl: str, args: argparse.Namespace) -> str:
    return sys.executable if impl.startswith("ours") else args.bench_python


def available(impl: str, args: argparse.Namespace) -> str | None:
    """Why `impl` cannot run here (None: it can)."""
    if impl.startswith("ours"):
        return None
    python = python_for(impl, args)
    if not Path(python).exists():
        return f"{python} not found (see benchmarks/README.md)"
    module = "mlx_lm" if impl == "mlx_lm" else "llama_cpp, gguf"
    check = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    return None if check.returncode == 0 else f"`import {module}` fails in {python}"


def spawn(args: argparse.Namespace, impl: str, model_dir: Path, dtype: str) -> dict:
    cmd = [
        python_for(impl, args),
        __file__,
        "--run",
        impl,
        "--model",
        str(model_dir),
        "--dtype",
        dtype,
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--new-tokens",
        str(args.new_tokens),
        "--llamacpp-threads",
        str(args.llamacpp_threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if impl == "llamacpp" and proc.returncode == -signal.SIGILL:
        # llama.cpp built with GGML_NATIVE uses AMX tiles for Q4_0 where the CPU lists AMX; some VMs list it
        # without enabling it (seen here: SIGILL at `tilezero`). Its extra buffer types (AMX, repack) go.
        print("llamacpp: illegal instruction; retrying without llama.cpp's extra buffer types", file=sys.stderr)
        proc = subprocess.run([*cmd, "--no-extra-bufts"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{impl} {dtype} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict], shape: str) -> str:
    """Medians per (dtype, impl), with ratios against mlx-lm at the same dtype."""
    keys = ("prefill_tps", "decode_tps", "load_s", "peak_mlx_gb", "max_rss_gb")
    medians: dict[tuple[str, str], dict] = {}
    for row in rows:
        medians.setdefault((row["dtype"], row["impl"]), {k: [] for k in keys})
        for k in keys:
            if row[k] is not None:
                medians[(row["dtype"], row["impl"])][k].append(row[k])
    med = {key: {k: statistics.median(v) if v else None for k, v in cols.items()} for key, cols in medians.items()}
    runs = {key: len(cols["decode_tps"]) for key, cols in medians.items()}
    lines = [
        f"Shape `{shape}`; medians of {min(runs.values())}+ runs; x = ratio to mlx-lm at the same dtype.",
        "",
        "| dtype | impl | prefill tok/s | x | decode tok/s | x | load s | peak MLX GB | max RSS GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (dtype, impl), m in med.items():
        ref = med.get((dtype, "mlx_lm"))
        ratio = {k: (m[k] / ref[k] if ref and ref[k] else None) for k in ("prefill_tps", "decode_tps")}
        lines.append(
            f"| {dtype} | {impl} | {fmt(m['prefill_tps'], 1)} | {fmt(ratio['prefill_tps'])} | "
            f"{fmt(m['decode_tps'])} | {fmt(ratio['decode_tps'])} | {fmt(m['load_s'])} | "
            f"{fmt(m['peak_mlx_gb'])} | {fmt(m['max_rss_gb'])} |"
        )
    return "\n".join(lines)


def drive(args: argparse.Namespace) -> None:
    load_blas()  # before mlx.core: making the checkpoints multiplies large matrices too
    workdir = Path(args.workdir)
    impls = args.impls.split(",")
    for impl in impls:
        if impl not in IMPLS:
            raise SystemExit(f"--impls: unknown {impl!r}; choose from {', '.join(IMPLS)}")
    skipped = {impl: why for impl in impls if (why := available(impl, args))}
    for impl, why in skipped.items():
        print(f"skipping {impl}: {why}", file=sys.stderr)
    impls = [i for i in impls if i not in skipped]
    rows = []
    jsonl = open(args.jsonl, "a") if args.jsonl else None
    for dtype in args.dtypes.split(","):
        if dtype not in DTYPES:
            raise SystemExit(f"--dtypes: unknown {dtype!r}; choose from {', '.join(DTYPES)}")
        make_checkpoint(workdir, args.shape, "float32")  # the source of every dtype, and of the GGUF files
        model_dir = make_checkpoint(workdir, args.shape, dtype)
        if "llamacpp" in impls:
            subprocess.run(
                [args.bench_python, __file__, "--make-gguf", "--model", str(model_dir), "--dtype", dtype],
                check=True,
                cwd=ROOT,
            )
        for run in range(args.runs):
            for impl in impls:  # interleaved, so slow drifts of the machine hit every implementation alike
                row = spawn(args, impl, model_dir, dtype)
                row.update(shape=args.shape, run=run)
                rows.append(row)
                print(
                    f"{dtype} {impl} run {run}: prefill {row['prefill_tps']:.1f} tok/s, "
                    f"decode {row['decode_tps']:.2f} tok/s, load {row['load_s']:.2f} s",
                    file=sys.stderr,
                )
                if jsonl:
                    jsonl.write(json.dumps(row) + "\n")
                    jsonl.flush()
    report = table(rows, args.shape)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help=f"comma-separated, from {', '.join(DTYPES)}")
    parser.add_argument("--impls", default="ours,ours-auto,mlx_lm,llamacpp", help="comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="measured processes per implementation and dtype")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--workdir", default="/tmp/mlx_llama_bench", help="scratch dir for the checkpoints")
    parser.add_argument("--bench-python", default=str(BENCH_PYTHON), help="Python with mlx-lm (and llama_cpp)")
    parser.add_argument(
        "--llamacpp-threads",
        type=int,
        default=os.cpu_count(),
        help="llama.cpp threads; its spinning thread pool collapses when other work shares the cores",
    )
    parser.add_argument("--output", help="also write the markdown table here")
    parser.add_argument("--jsonl", help="append every run's JSON line here")
    parser.add_argument("--run", choices=IMPLS, help=argparse.SUPPRESS)  # internal: one measured run
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--make-gguf", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-extra-bufts", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_gguf:
        make_gguf(args)
    elif args.run:
        run_one(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
