"""`mlx-llama serve` limits and safety on a tiny random long-context model: API key, CORS, queueing beyond
--max-concurrency, a disconnect freeing its slot, prompt-cache reuse, SIGTERM exiting 0.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from support.server import ServerProcess, tiny_long_context_model

import mlx_llama

KEY = "sk-test-key"
ORIGIN = "http://app.example"
NO_EOS = {"2": -100}  # a random model may end at once; these tests need long answers


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_long_context_model(tmp_path_factory.mktemp("tiny-long"))


@pytest.fixture(scope="module")
def server(model_dir):
    srv = ServerProcess(
        "--model",
        str(model_dir),
        "--max-concurrency",
        "1",
        "--api-key",
        KEY,
        "--cors-origin",
        ORIGIN,
        "--prompt-cache-bytes",
        "64MB",
    )
    yield srv
    assert srv.stop(signal.SIGTERM) == 0, "".join(srv.lines)


@pytest.fixture(scope="module")
def client(server):
    return server.client(api_key=KEY)


def health(server) -> dict:
    with server.http() as http:
        return http.get("/health").json()


def test_api_key_is_required(server, client, model_dir):
    server_model_dir = model_dir
    bad = server.client(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with server.http() as http:
        r = http.post("/v1/completions", json={"model": "x", "prompt": "a"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/health").status_code == 200  # health checks need no key
    assert client.models.list().data[0].id == server_model_dir.name


def test_cors_allows_only_the_configured_origin(server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with server.http() as http:
        ok = http.options("/v1/chat/completions", headers={"Origin": ORIGIN, **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
        other = http.options("/v1/chat/completions", headers={"Origin": "http://evil.example", **preflight})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        r = http.get("/v1/models", headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"})
        assert r.headers["access-control-allow-origin"] == ORIGIN


def test_requests_beyond_max_concurrency_queue_and_match_one_at_a_time(client, model_dir):
    model, tok = mlx_llama.load(model_dir)
    prompts = ["the cat", "a dog ran", "birds sang in"]
    expected = [mlx_llama.generate(model, tok, p, max_tokens=12) for p in prompts]

    def ask(prompt):
        out = client.completions.create(model="t", prompt=prompt, max_tokens=12, temperature=0)
        return out.choices[0].text

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(ask, prompts)) == expected


def test_a_disconnected_stream_frees_its_slot(server, client):
    before = health(server)["cancelled"]
    body = {"model": "t", "prompt": "the", "max_tokens": 3500, "logit_bias": NO_EOS, "stream": True}
    with httpx.Client(base_url=server.base, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as http:
        with http.stream("POST", "/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break  # one chunk, then hang up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and health(server)["cancelled"] == before:
        time.sleep(0.05)
    state = health(server)
    assert state["cancelled"] == before + 1 and state["active"] == 0
    # with --max-concurrency 1 the next request is served at once, not after 3,500 tokens
    out = client.completions.create(model="t", prompt="the", max_tokens=3, temperature=0, timeout=10)
    assert out.usage.completion_tokens >= 1


def test_a_shared_prefix_reuses_the_prompt_cache(client, model_dir):
    model, tok = mlx_llama.load(model_dir)
    rng = np.random.default_rng(0)
    prefix = [1] + rng.integers(3, 2000, size=1200).tolist()
    first = client.completions.create(model="t", prompt=prefix + [5, 6], max_tokens=4, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens < 10
    second = client.completions.create(model="t", prompt=prefix + [7, 8, 9], max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens == len(prefix)
    assert second.usage.prompt_tokens == len(prefix) + 3
    expected = mlx_llama.generate(model, tok, prefix + [7, 8, 9], max_tokens=8)
    assert second.choices[0].text == expected


def test_serve_argument_errors_are_one_line_exit_2(capsys):
    import socket

    from mlx_llama.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        for args, fragment in (
            (["--port", "70000"], "port must be in 0..65535"),
            (["--max-concurrency", "0"], "--max-concurrency must be at least 1"),
            (["--port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
        ):
            assert main(["serve", *args]) == 2
            err = capsys.readouterr().err
            assert fragment in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--prompt-cache-bytes", "lots"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not a size" in err and len(err.strip().splitlines()) == 1


def test_a_client_giving_up_on_a_non_streamed_request_frees_its_slot(server):
    before = health(server)["cancelled"]
    body = {"model": "t", "prompt": "the", "max_tokens": 3500, "logit_bias": NO_EOS}
    with httpx.Client(base_url=server.base, timeout=1.0, headers={"Authorization": f"Bearer {KEY}"}) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=body)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and health(server)["cancelled"] == before:
        time.sleep(0.05)
    state = health(server)
    assert state["cancelled"] == before + 1 and state["active"] == 0
