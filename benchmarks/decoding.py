"""Decoding benchmarks of issue 14, each in one process so ratios compare like with like on a busy machine.

    python benchmarks/decoding.py speed --layers 4 --dtypes float32,bfloat16,q4   # decode tok/s vs mlx-lm
    python benchmarks/decoding.py speculative --draft DIR                          # draft model / prompt lookup
    python benchmarks/decoding.py memory                                           # long context, KV caches
    python benchmarks/decoding.py perplexity --corpus r-cran-janeaustenr_*.deb     # weight / KV bits on the demo

`speed` builds one random TinyLlama-shaped model (fewer layers with --layers), loads the same weights into
mlx-lm's llama and into ours (plain, and with fused projections), then times greedy decoding of each in
interleaved rounds (medians). mlx-lm is a benchmark-only dependency. Output: markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mlx_llama  # noqa: E402, I001  (first: BLAS set-up before MLX loads)
from mlx_llama.generation.loop import decode  # noqa: E402
from mlx_llama.generation.sampling import SamplingParams, TokenChooser  # noqa: E402

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

TINYLLAMA = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_attention_heads=32,
    num_key_value_heads=4,
    vocab_size=32000,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
)


def ours_steps(model, prompt: list[int], n: int):
    chooser = TokenChooser(SamplingParams())
    for step in decode(model, model.make_cache(), mx.array([prompt]), chooser, n):
        yield step.tokens[0]


def mlx_lm_steps(model, prompt: list[int], n: int):
    from mlx_lm.generate import generate_step

    for token, _ in generate_step(mx.array(prompt), model, max_tokens=n):
        yield int(token)


def time_decode(steps) -> tuple[float, list[int]]:
    """(decode tok/s, tokens): (n - 1) tokens over the time from the first token to the last."""
    tokens, first = [], None
    for token in steps:
        tokens.append(token)
        if first is None:
            first = time.perf_counter()
    return (len(tokens) - 1) / (time.perf_counter() - first), tokens


def build_models(layers: int, dtype: str):
    from mlx_lm.models import llama as lm_llama

    config = mlx_llama.LlamaConfig(num_hidden_layers=layers, **TINYLLAMA)
    mx.random.seed(0)
    ours = mlx_llama.LlamaForCausalLM(config)
    for _, module in ours.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight = mx.random.normal(module.weight.shape) * 0.02
    theirs = lm_llama.Model(
        lm_llama.ModelArgs(model_type="llama", num_hidden_layers=layers, tie_word_embeddings=False, **TINYLLAMA)
    )
    theirs.load_weights(list(tree_flatten(ours.parameters())))
    for model in (ours, theirs):
        if dtype == "q4":
            nn.quantize(model, group_size=64, bits=4)
        else:
            model.set_dtype(getattr(mx, dtype))
        mx.eval(model.parameters())
    from mlx_llama.modeling.cpu_linear import use_input_major_layout
    from mlx_llama.modeling.fused import fuse_projections

    copies = []
    for _ in range(2):  # the same arrays (quantized ones too), laid out / fused afterwards
        copy = mlx_llama.LlamaForCausalLM(config)
        if dtype == "q4":
            nn.quantize(copy, group_size=64, bits=4)
        copy.update(ours.parameters())
        copies.append(copy)
    use_input_major_layout(copies[0])  # what from_pretrained / load() do on the CPU backend
    return {
        "ours, CPU layout off": ours,
        "ours": copies[0],
        "ours+fused": fuse_projections(copies[1]),
        "mlx_lm": theirs,
    }


def layout_off_steps(model, prompt: list[int], n: int):
    """Our steps with modeling/cpu_linear.py switched off (MLX_LLAMA_CPU_LAYOUT=0): the plain MLX products."""
    os.environ["MLX_LLAMA_CPU_LAYOUT"] = "0"
    try:
        yield from ours_steps(model, prompt, n)
    finally:
        del os.environ["MLX_LLAMA_CPU_LAYOUT"]


def run_speed(args) -> None:
    print(f"| dtype | layers | impl | decode tok/s (median of {args.runs}) | vs mlx-lm |")
    print("|---|---|---|---|---|")
    prompt = list(range(10, 10 + args.prompt_tokens))
    for dtype in args.dtypes.split(","):
        models = build_models(args.layers, dtype)
        runners = {"ours, CPU layout off": layout_off_steps, "ours": ours_steps, "ours+fused": ours_steps}
        runners["mlx_lm"] = mlx_lm_steps
        speeds = {name: [] for name in models}
        outputs = {}
        for name, model in models.items():  # warm-up
            time_decode(runners[name](model, prompt, 4))
        for _ in range(args.runs):
            for name, model in models.items():
                tps, outputs[name] = time_decode(runners[name](model, prompt, args.new_tokens))
                speeds[name].append(tps)
                print(f"  {dtype} {name}: {tps:.2f} tok/s", file=sys.stderr)
        groups: dict[tuple, list[str]] = {}
        for name, tokens in outputs.items():
            groups.setdefault(tuple(tokens), []).append(name)
        base = statistics.median(speeds["mlx_lm"])
        for name in models:
            med = statistics.median(speeds[name])
            print(f"| {dtype} | {args.layers} | {name} | {med:.2f} | {med / base:.2f}x |")
        same = " | ".join(", ".join(names) for names in groups.values())
        print(f"  {dtype}: identical greedy tokens within: {same}", file=sys.stderr)
        del models
        mx.clear_cache()


# ---- speculative and prompt-lookup decoding on the demo model ----------------------------------------------

COPY_PASSAGE = (
    "Elizabeth walked on alone, crossing field after field at a quick pace, jumping over stiles and "
    "springing over puddles with impatient activity, and finding herself at last within view of the house."
)


def layer_draft(model, layers: int = 1):
    """A draft of the same vocabulary without training: the model's embedding, first layers, norm and head."""
    import copy

    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    draft = mlx_llama.LlamaForCausalLM(config)
    wanted = {k for k, _ in tree_flatten(draft.parameters())}
    draft.load_weights([(k, v) for k, v in tree_flatten(model.parameters()) if k in wanted])
    mx.eval(draft.parameters())
    return draft


def spec_run(model, tok, prompt: str, n: int, **kw):
    from mlx_llama.generation.speculative import SpeculativeStats

    stats = SpeculativeStats()
    extra = {"speculative_stats": stats} if kw else {}
    out = list(mlx_llama.stream_generate(model, tok, prompt, n, eos_token_id=[], **kw, **extra))
    return out[-1].generation_tps, [r.token for r in out], stats


def run_speculative(args) -> None:
    model, tok = mlx_llama.load(mlx_llama.DEMO_MODEL)
    if args.draft:
        draft, draft_name = mlx_llama.loading.load_model(args.draft), f"trained draft {args.draft}"
    else:
        draft, draft_name = layer_draft(model), "layer-0 draft (the demo's embedding, first layer, norm, head)"
    prompts = {
        "copy-heavy": f"{COPY_PASSAGE}\n\n{COPY_PASSAGE}\n\n{COPY_PASSAGE.split(',')[0]}",
        "free text": "It is a truth universally acknowledged",
    }
    methods = {"plain": {}}
    methods.update({f"draft k={k}": {"draft_model": draft, "num_draft_tokens": k} for k in (2, 4)})
    methods.update({f"lookup k={k}": {"prompt_lookup": k} for k in (2, 4, 8)})
    print(f"Draft: {draft_name}. Greedy, {args.new_tokens} new tokens, median of {args.runs} interleaved runs.\n")
    print("| prompt | method | decode tok/s | speed-up | acceptance (accepted / drafted) | tokens from drafts |")
    print("|---|---|---|---|---|---|")
    for pname, prompt in prompts.items():
        for kw in methods.values():  # warm-up
            spec_run(model, tok, prompt, 8, **kw)
        speeds, outs, stats = {m: [] for m in methods}, {}, {}
        for _ in range(args.runs):
            for mname, kw in methods.items():
                tps, outs[mname], stats[mname] = spec_run(model, tok, prompt, args.new_tokens, **kw)
                speeds[mname].append(tps)
        base = statistics.median(speeds["plain"])
        for mname in methods:
            med, st = statistics.median(speeds[mname]), stats[mname]
            acc = "–" if mname == "plain" else f"{st.acceptance_rate:.0%} ({st.accepted}/{st.drafted})"
            share = "–" if mname == "plain" else f"{st.accepted / args.new_tokens:.0%}"
            print(f"| {pname} | {mname} | {med:.1f} | {med / base:.2f}x | {acc} | {share} |")
        print(f"  {pname}: identical greedy output: {len({tuple(o) for o in outs.values()}) == 1}", file=sys.stderr)


def run_speculative_big(args) -> None:
    """Prompt lookup and a layer draft on the random TinyLlama-shaped model, where a step is memory-bound."""
    from mlx_llama.generation.speculative import SpeculativeStats, speculative_steps

    model = build_models(args.layers, "float32")["ours"]
    draft = layer_draft(model)
    chooser = TokenChooser(SamplingParams())
    prompt = list(range(100, 116)) * 3  # a copy-heavy id prompt
    methods = {
        "plain": None,
        "draft k=3": {"draft_model": draft, "num_draft_tokens": 3},
        "lookup k=4": {"prompt_lookup": 4},
    }
    print(
        f"\nRandom TinyLlama shape, {args.layers} layers, float32, greedy, {args.new_tokens} new tokens, "
        f"median of {args.runs}.\n"
    )
    print("| method | decode tok/s | speed-up | acceptance (accepted / drafted) |")
    print("|---|---|---|---|")
    speeds, outs, stats = {m: [] for m in methods}, {}, {}
    for _ in range(args.runs):
        for name, kw in methods.items():
            stats[name] = SpeculativeStats()
            if kw is None:
                steps = (
                    s.tokens[0] for s in decode(model, model.make_cache(), mx.array([prompt]), chooser, args.new_tokens)
                )
            else:
                steps = (
                    s.tokens[0]
                    for s in speculative_steps(
                        model, model.make_cache(), prompt, chooser, args.new_tokens, stats=stats[name], **kw
                    )
                )
            tps, outs[name] = time_decode(steps)
            speeds[name].append(tps)
    base = statistics.median(speeds["plain"])
    for name in methods:
        med, st = statistics.median(speeds[name]), stats[name]
        acc = "–" if name == "plain" else f"{st.acceptance_rate:.0%} ({st.accepted}/{st.drafted})"
        print(f"| {name} | {med:.2f} | {med / base:.2f}x | {acc} |")
    print(f"  identical greedy output: {len({tuple(o) for o in outs.values()}) == 1}", file=sys.stderr)


# ---- long-context memory ---------------------------------------------------------------------------------

MEMORY_SHAPE = dict(
    hidden_size=1024,
    intermediate_size=2816,
    num_attention_heads=8,
    num_key_value_heads=8,
    vocab_size=32000,
    max_position_embeddings=32768,
    rms_norm_eps=1e-5,
    num_hidden_layers=2,
)


def run_memory(args) -> None:
    config = mlx_llama.LlamaConfig(**MEMORY_SHAPE)
    mx.random.seed(0)
    model = mlx_llama.LlamaForCausalLM(config)
    for _, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight = mx.random.normal(module.weight.shape) * 0.02
    mx.eval(model.parameters())
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    prompt = mx.random.randint(3, 32000, (1, args.prompt_tokens)).astype(mx.int32)
    kinds = {
        "float (KVCache)": {},
        f"rotating, max_kv_size={args.window}": {"max_kv_size": args.window},
        "quantized 8-bit (group 64)": {"kv_bits": 8},
        "quantized 4-bit (group 64)": {"kv_bits": 4},
    }
    print(
        f"Random model: hidden 1024, 2 layers, 8 heads = 8 KV heads of 128, float32, weights {weights / 1e6:.0f} MB."
        f" Prompt {args.prompt_tokens} tokens (prefill chunks of 512), then {args.new_tokens} greedy tokens.\n"
    )
    print("| KV cache | cache size after | peak MLX memory | peak - weights | decode tok/s |")
    print("|---|---|---|---|---|")
    for name, options in kinds.items():
        mx.clear_cache()
        mx.reset_peak_memory()
        cache = model.make_cache(**options) if options else model.make_cache()
        chooser = TokenChooser(SamplingParams())
        first, n = None, 0
        for _ in decode(model, cache, prompt, chooser, args.new_tokens):
            n += 1
            if first is None:
                first = time.perf_counter()
        t0 = time.perf_counter() - first
        size = sum(layer.nbytes for layer in cache)
        peak = mx.get_peak_memory()
        print(
            f"| {name} | {size / 1e6:.1f} MB | {peak / 1e6:.0f} MB | {(peak - weights) / 1e6:.0f} MB | "
            f"{(n - 1) / t0:.1f} |"
        )


# ---- perplexity of quantized weights and KV caches on the demo model ------------------------------------------


def held_out_text(corpus: str | None) -> str:
    """Every 50th paragraph of the six novels: the held-out split of examples/train_tiny.py."""
    import importlib.util
    import tempfile

    spec = importlib.util.spec_from_file_location("train_tiny", ROOT / "examples" / "train_tiny.py")
    train_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_tiny)
    with tempfile.TemporaryDirectory() as tmp:
        books = train_tiny.read_books(train_tiny.find_corpus(corpus, Path(tmp)))
    paras = [p for name in train_tiny.BOOKS for p in train_tiny.paragraphs(books[name])]
    return " ".join(paras[::50])  # (a newline never occurs in the training stream: it would be byte tokens)


def fake_quantize(w: mx.array, bits: int, group_size: int = 64) -> mx.array:
    """The weights an affine `bits`-bit quantized layer computes with (MLX's CPU 2/3-bit kernels are slow)."""
    q = mx.quantize(w, group_size=group_size, bits=bits)
    return mx.dequantize(*q, group_size=group_size, bits=bits).astype(w.dtype)


def run_perplexity(args) -> None:
    from mlx.utils import tree_map

    text = held_out_text(args.corpus)
    rows = [("float32 weights, float KV", None, None)]
    rows += [(f"{b}-bit weights (group 64), float KV", b, None) for b in (8, 4, 3, 2)]
    rows += [(f"float32 weights, {b}-bit KV (group 64)", None, b) for b in (8, 4)]
    rows += [("4-bit weights, 4-bit KV", 4, 4)]
    tokens = None
    print("| weights / KV cache | perplexity | vs float |")
    print("|---|---|---|")
    base = None
    for name, wbits, kvbits in rows:
        model, tok = mlx_llama.load(mlx_llama.DEMO_MODEL)
        if wbits:  # each matrix replaced by dequantize(quantize(w)): the values the quantized kernels use
            model.update(tree_map(lambda w, b=wbits: fake_quantize(w, b) if w.ndim == 2 else w, model.parameters()))
            mx.eval(model.parameters())
        options = {"kv_bits": kvbits, "kv_group_size": 64} if kvbits else None
        tokens = tokens or len(tok.encode(text))
        ppl = mlx_llama.perplexity(model, tok, text, context_length=args.context_length, cache_options=options)
        base = base or ppl
        print(f"| {name} | {ppl:.3f} | {ppl / base - 1:+.2%} |")
    print(
        f"\n{tokens} tokens of held-out Austen (every 50th paragraph, joined by spaces), "
        f"windows of {args.context_length}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--layers", type=int, default=4)
    sp.add_argument("--dtypes", default="float32,bfloat16,q4")
    sp.add_argument("--runs", type=int, default=3)
    sp.add_argument("--prompt-tokens", type=int, default=16)
    sp.add_argument("--new-tokens", type=int, default=32)
    sp = sub.add_parser("speculative")
    sp.add_argument("--draft", help="a trained draft model directory (default: the demo's first layer)")
    sp.add_argument("--runs", type=int, default=3)
    sp.add_argument("--new-tokens", type=int, default=128)
    sb = sub.add_parser("speculative-big")
    sb.add_argument("--layers", type=int, default=2)
    sb.add_argument("--runs", type=int, default=3)
    sb.add_argument("--new-tokens", type=int, default=24)
    mp = sub.add_parser("memory")
    mp.add_argument("--prompt-tokens", type=int, default=4096)
    mp.add_argument("--new-tokens", type=int, default=64)
    mp.add_argument("--window", type=int, default=1024)
    pp = sub.add_parser("perplexity")
    pp.add_argument("--corpus", help="r-cran-janeaustenr .deb (as examples/train_tiny.py takes)")
    pp.add_argument("--context-length", type=int, default=256)
    args = parser.parse_args()
    runs = {
        "speed": run_speed,
        "speculative": run_speculative,
        "speculative-big": run_speculative_big,
        "memory": run_memory,
        "perplexity": run_perplexity,
    }
    runs[args.what](args)


if __name__ == "__main__":
    main()
