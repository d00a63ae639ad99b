"""One rank of the parallel tests: load each checkpoint in each mode and record what generation gives.

Run as `python3 tests/support/parallel_worker.py SPEC.json OUT_DIR` under MLX_HOSTFILE/MLX_RANK (or mlx.launch). The
same computations run in the test process on one rank give the reference (see `run_checks`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx_llama  # before mlx.core (imported in the functions): its BLAS set-up precedes MLX's loading

PROMPT = "the cat sat on the mat and the dog ran to the park"
BATCH = [[0, 0, 5, 9, 14, 3], [7, 21, 4, 9, 30, 11]]  # row 0 left padded (pad id 0)
FORWARD = [[1, 17, 5, 9, 40, 3, 8, 12]]


def run_checks(model, tokenizer) -> dict:
    """Greedy streaming with chunked prefill, a cache continued over two calls, a padded batch, raw logits."""
    import mlx.core as mx

    from mlx_llama.generation.api import stream_generate

    def stream(prompt, n, cache=None, **kw):
        return [
            r.token
            for r in stream_generate(
                model, tokenizer, prompt, n, cache=cache, prefill_step_size=3, eos_token_id=[], **kw
            )
        ]

    greedy = stream(PROMPT, 10)
    rotating = stream(PROMPT, 8, max_kv_size=10)  # a rotating KV cache, smaller than the prompt
    cache = model.make_cache()
    first = stream(PROMPT, 4, cache=cache)
    for layer in cache:  # drop the last two positions, as the chat command does when re-rendering a turn
        layer.trim(2)
    second = stream(first[2:] + tokenizer.encode(" and the", add_special_tokens=False), 6, cache=cache)
    batch = model.generate(
        mx.array(BATCH),
        attention_mask=mx.array([[0, 0, 1, 1, 1, 1], [1] * 6]),
        max_new_tokens=6,
        pad_token_id=0,
        eos_token_id=[],
    )
    beams = model.generate(mx.array(FORWARD), num_beams=3, max_new_tokens=4, eos_token_id=[], do_sample=False)
    logits = model(mx.array(FORWARD)).logits.astype(mx.float32)
    text = mlx_llama.generate(model, tokenizer, "a small boat", 6, eos_token_id=[])
    return {
        "greedy": greedy,
        "continued": first + second,
        "batch": batch.tolist(),
        "text": text,
        "rotating": rotating,
        "beams": beams.tolist(),
        "cache_bytes": sum(layer.nbytes for layer in cache),
        "logits": logits.reshape(-1).tolist(),
    }


def main(spec_path: str, out_dir: str) -> None:
    import mlx.core as mx

    from mlx_llama.parallel import parameter_bytes

    spec = json.loads(Path(spec_path).read_text())
    group = mx.distributed.init(strict=True, backend="ring")
    results = {}
    for name, directory in spec["checkpoints"].items():
        for mode in spec["modes"]:
            model, tokenizer = mlx_llama.load(directory, parallel=mode)
            record = run_checks(model, tokenizer)
            record["sampled"] = [
                r.token
                for r in mlx_llama.stream_generate(model, tokenizer, PROMPT, 8, temperature=1.0, eos_token_id=[])
            ]
            record["param_bytes"] = parameter_bytes(model)
            record["bytes_read"] = model.parallel.bytes_read
            results[f"{name}/{mode}"] = record
    Path(out_dir, f"rank{group.rank()}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
