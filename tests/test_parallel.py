"""Tensor- and pipeline-parallel generation on 2 local ranks (mx.distributed ring over 127.0.0.1).

The reference is single-process greedy generation (itself checked against Transformers in test_generate):
every rank must produce exactly its tokens, and logits within float tolerance (an all-reduce sums partial
products in another order). Rank start-up dominates, so one launch runs every checkpoint and mode.
"""

import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from support.checkpoints import write_checkpoint  # noqa: E402
from support.parallel_worker import run_checks  # noqa: E402
from support.ranks import describe, free_ports, run_launcher, run_ranks, start_ranks, stop_ranks, wait_for_http  # noqa: E402

import mlx_llama  # noqa: E402
from mlx_llama.errors import ConfigError  # noqa: E402
from mlx_llama.parallel import ParallelPlan, parameter_bytes, pipeline_plan, tensor_config  # noqa: E402

WORKER = Path(__file__).parent / "support" / "parallel_worker.py"
MODES = ("tensor", "pipeline")
SHAPE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=4)
CHECKPOINTS = ("gqa", "mha", "gqa4", "mha4", "open", "bias")


def open_llama_checkpoint(directory: Path, tokenizer_from: Path) -> None:
    """A random Open-Llama (stable embedding, tied input/output embedding) in its Transformers layout."""
    from mlx_llama import OpenLlamaConfig, OpenLlamaForCausalLM

    config = OpenLlamaConfig(vocab_size=160, max_position_embeddings=256, **SHAPE)
    mx.random.seed(3)
    model = OpenLlamaForCausalLM(config)
    model.model.embed_tokens.weight = model.model.embed_tokens.weight * 8  # clear greedy choices, no near-ties
    mx.eval(model.parameters())
    model.save_pretrained(directory)
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, directory / name)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    dirs = {name: root / name for name in CHECKPOINTS}
    write_checkpoint(dirs["gqa"], num_key_value_heads=2, **SHAPE)
    write_checkpoint(dirs["mha"], seed=1, num_key_value_heads=4, **SHAPE)
    for name in ("gqa", "mha"):
        mlx_llama.convert_checkpoint(
            dirs[name], dirs[name + "4"], dtype="float32", quantize=True, q_bits=4, q_group_size=32, quiet=True
        )
    open_llama_checkpoint(dirs["open"], dirs["gqa"])
    biased = write_checkpoint(dirs["bias"], seed=2, num_key_value_heads=2, attention_bias=True, mlp_bias=True, **SHAPE)
    with torch.no_grad():  # Transformers initialises biases to zero: make them count
        for name, param in biased.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.5)
    biased.save_pretrained(dirs["bias"], safe_serialization=True)
    return dirs


@pytest.fixture(scope="module")
def references(checkpoints):
    refs = {}
    for name, directory in checkpoints.items():
        model, tokenizer = mlx_llama.load(directory)
        files = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
        refs[name] = {**run_checks(model, tokenizer), "param_bytes": parameter_bytes(model), "file_bytes": files}
    return refs


def launch(checkpoints, modes, n, work):
    """Run the worker on n local ranks; its per-rank results."""
    spec = work / "spec.json"
    spec.write_text(json.dumps({"checkpoints": {k: str(v) for k, v in checkpoints.items()}, "modes": modes}))
    results = run_ranks([str(WORKER), str(spec), str(work)], work, n=n, timeout=150)
    assert all(r.returncode == 0 for r in results), describe(results)
    return [json.loads((work / f"rank{r}.json").read_text()) for r in range(n)]


@pytest.fixture(scope="module")
def ranks(checkpoints, tmp_path_factory):
    return launch(checkpoints, MODES, 2, tmp_path_factory.mktemp("ranks"))


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_two_ranks_generate_as_one_process(ranks, references, name, mode):
    ref = references[name]
    for rank, results in enumerate(ranks):
        got = results[f"{name}/{mode}"]
        for key in ("greedy", "continued", "batch", "text", "beams", "rotating"):
            assert got[key] == ref[key], f"rank {rank} {key}"
        np.testing.assert_allclose(got["logits"], ref["logits"], atol=2e-4, rtol=1e-4)
        # Layer weights dominate these models, so each rank holds about half of them.
        assert got["param_bytes"] <= 0.6 * ref["param_bytes"], f"rank {rank}: {got['param_bytes']} bytes"
        assert 0 < got["bytes_read"] <= 0.6 * ref["file_bytes"], f"rank {rank} read {got['bytes_read']} bytes"
        # Tensor: half of every layer's KV heads; pipeline: the whole cache of half of the layers.
        assert got["cache_bytes"] * 2 == ref["cache_bytes"] > 0, f"rank {rank}: KV cache of {got['cache_bytes']} bytes"
    assert ranks[0][f"{name}/{mode}"]["sampled"] == ranks[1][f"{name}/{mode}"]["sampled"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_three_stage_pipeline_with_a_middle_rank(checkpoints, references, tmp_path):
    """4 layers over 3 ranks (2, 1, 1): the middle rank receives and sends; tied (Open-Llama) and untied heads."""
    chosen = {name: checkpoints[name] for name in ("gqa", "open")}
    for rank, results in enumerate(launch(chosen, ["pipeline"], 3, tmp_path)):
        for name in chosen:
            got, ref = results[f"{name}/pipeline"], references[name]
            assert [got[k] for k in ("greedy", "continued", "batch")] == [
                ref[k] for k in ("greedy", "continued", "batch")
            ], (rank, name)
            np.testing.assert_allclose(got["logits"], ref["logits"], atol=2e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_reports_heads_that_do_not_divide(checkpoints, tmp_path):
    argv = ["-m", "mlx_llama", "generate", "--model", str(checkpoints["gqa"]), "--prompt", "hi", "--parallel", "tensor"]
    results = run_ranks(argv, tmp_path, n=3, timeout=60, kill_on_failure=False)  # all fail alike, at load
    for r in results:
        assert r.returncode == 2, describe(results)
        assert r.stderr.strip().splitlines() == [
            "mlx-llama: error: config field `num_attention_heads` (4) must be divisible by the number of ranks (3) "
            "for tensor parallelism; use --parallel pipeline or another rank count"
        ]


@pytest.mark.slow
def test_single_process_is_a_group_of_one(checkpoints, references):
    model, tokenizer = mlx_llama.load(checkpoints["gqa4"], parallel="tensor")
    assert run_checks(model, tokenizer)["greedy"] == references["gqa4"]["greedy"]
    with pytest.raises(ConfigError, match="parallel='rows': expected one of tensor, pipeline"):
        mlx_llama.load(checkpoints["gqa"], parallel="rows")


def test_pipeline_stages_are_contiguous_and_balanced():
    assert [pipeline_plan(5, r, 2) for r in range(2)] == [
        ParallelPlan("pipeline", 0, 2, 0, 3),
        ParallelPlan("pipeline", 1, 2, 3, 5),
    ]
    assert [(p.first, p.stop) for p in (pipeline_plan(7, r, 3) for r in range(3))] == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        pipeline_plan(2, 0, 3)


def test_tensor_split_needs_divisible_heads():
    config = mlx_llama.LlamaConfig(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    local = tensor_config(config, 2)
    assert (local.num_attention_heads, local.num_key_value_heads, local.intermediate_size, local.head_dim) == (
        2,
        1,
        64,
        16,
    )
    with pytest.raises(ConfigError, match="num_key_value_heads.*divisible.*4"):
        tensor_config(config, 4)
    quantized = mlx_llama.LlamaConfig(**{**config.to_dict(), "quantization": {"group_size": 64, "bits": 4}})
    with pytest.raises(ConfigError, match="o_proj: 32 input features per rank"):
        tensor_config(quantized, 2)


def single_process_cli(argv, capsys, monkeypatch, stdin=""):
    import io

    from mlx_llama.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_generate_under_mlx_launch_prints_once(checkpoints, capsys, monkeypatch):
    argv = ["generate", "--model", str(checkpoints["gqa"]), "--prompt", "the cat sat", "--max-tokens", "8", "--quiet"]
    expected = single_process_cli(argv, capsys, monkeypatch)
    assert expected.strip()
    port = free_ports(1)[0]
    beside = Path(sys.executable).parent / "mlx.launch"  # the venv's, when the venv is not on PATH (.ci/run)
    cmd = [
        str(beside) if beside.exists() else "mlx.launch",
        "-n",
        "2",
        "--backend",
        "ring",
        "--starting-port",
        str(port),
        "--",
        sys.executable,
        "-m",
        "mlx_llama",
        *argv,
        "--parallel",
        "tensor",
    ]
    # mlx.launch exits 0 even when a rank failed: its "[WARN] Node with rank R exited" line says so.
    out, err = run_launcher(cmd, timeout=90)
    assert "exited with code" not in out + err, out + err
    assert out == expected


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_chat_rank0_reads_and_prints(checkpoints, capsys, monkeypatch, tmp_path):
    argv = ["chat", "--model", str(checkpoints["mha"]), "--max-tokens", "6", "--quiet"]
    lines = "the cat sat\nand the dog\n/quit\n"
    expected = single_process_cli(argv, capsys, monkeypatch, lines)
    assert expected.count("\n") == 2
    results = run_ranks(
        ["-m", "mlx_llama", *argv, "--parallel", "pipeline"], tmp_path, n=2, timeout=60, stdin_text=lines
    )
    assert all(r.returncode == 0 for r in results), describe(results)
    assert results[0].stdout == expected
    assert results[1].stdout == ""


@pytest.mark.subprocess
@pytest.mark.slow
def test_serve_rank0_http_with_concurrent_requests(checkpoints, references, tmp_path):
    """Rank 0 serves; 3 concurrent greedy completions (continuous batching, mirrored on rank 1) each equal the
    single-process text; SIGTERM to rank 0 stops both ranks cleanly."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    model, tokenizer = mlx_llama.load(checkpoints["gqa"])
    prompts = ["the cat sat", "a small boat sailed", "birds sang in tall green"]
    expected = [mlx_llama.generate(model, tokenizer, p, 8) for p in prompts]
    port = free_ports(1)[0]
    argv = [
        "-m",
        "mlx_llama",
        "serve",
        "--model",
        str(checkpoints["gqa"]),
        "--port",
        str(port),
        "--parallel",
        "tensor",
        "--quiet",
    ]
    procs = start_ranks(argv, tmp_path, n=2)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", procs, timeout=60)

        def complete(prompt):
            body = {"model": "m", "prompt": prompt, "max_tokens": 8, "temperature": 0}
            return httpx.post(f"{base}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]

        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(complete, prompts)) == expected
        procs[0].send_signal(signal.SIGTERM)
        assert [p.wait(timeout=30) for p in procs] == [0, 0]
    finally:
        stop_ranks(procs)


def test_serve_sends_sampling_options_and_json_schemas_intact():
    """What rank 0 sends its peers per request survives JSON: logit bias keys, seeds, compiled schema nodes."""
    from mlx_llama.parallel_serve import _options, _options_json
    from mlx_llama.server.json_constraint import recognizer_for
    from mlx_llama.server.sampler import SamplingOptions

    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"enum": ["x", "y"]},
            "c": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["a"],
    }
    for fmt in ({"type": "json_schema", "json_schema": {"schema": schema}}, {"type": "json_object"}):
        sent = SamplingOptions(
            temperature=0.5, top_k=3, logit_bias={3: -1.5}, seed=4, logprobs=2, recognizer=recognizer_for(fmt)
        )
        got = _options(json.loads(json.dumps(_options_json(sent))))
        assert got.recognizer.node == sent.recognizer.node
        assert (got.temperature, got.top_k, got.logit_bias, got.seed, got.logprobs) == (0.5, 3, {3: -1.5}, 4, 2)
