"""`mlx-llama serve` on the bundled demo model, through the official openai client, against `generate`.

One real server subprocess on a free 127.0.0.1 port for the whole module; every request has a timeout and
the server must stop on SIGINT with exit status 0.
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import pytest
from support.server import ServerProcess

import mlx_llama
from mlx_llama import DEMO_MODEL

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


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess("--max-concurrency", "8")
    yield srv
    assert srv.stop(signal.SIGINT) == 0, "".join(srv.lines)


@pytest.fixture(scope="module")
def oracle():
    return mlx_llama.load(DEMO_MODEL)


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def chat_ids(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)


def test_completion_at_temperature_0_equals_generate(client, oracle):
    model, tok = oracle
    out = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=24, temperature=0)
    assert out.choices[0].text == mlx_llama.generate(model, tok, "Once upon a time", max_tokens=24)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(tok.encode("Once upon a time"))
    assert out.usage.completion_tokens == 24 and out.usage.total_tokens == out.usage.prompt_tokens + 24
    assert out.object == "text_completion" and out.model == "mlx-llama-demo"


def test_completion_stream_matches_and_ends_with_done(server, client, oracle):
    model, tok = oracle
    chunks = list(
        client.completions.create(
            model="demo",
            prompt="The house was",
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == mlx_llama.generate(model, tok, "The house was", max_tokens=20)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    with server.http() as http:  # the raw stream: SSE data lines, the last one [DONE]
        raw = http.post("/v1/completions", json={"model": "x", "prompt": "a", "max_tokens": 3, "stream": True})
        lines = [ln for ln in raw.text.split("\n") if ln]
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"


def test_chat_uses_the_chat_format_streamed_or_not(client, oracle):
    model, tok = oracle
    messages = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Tell me one."}]
    ids = chat_ids(tok, messages)
    expected = mlx_llama.generate(model, tok, ids, max_tokens=30, stop=["\nUser:"])
    out = client.chat.completions.create(model="demo", messages=messages, max_tokens=30, temperature=0)
    assert out.choices[0].message.content == expected and out.choices[0].message.role == "assistant"
    assert out.usage.prompt_tokens == len(ids)
    chunks = list(
        client.chat.completions.create(
            model="demo",
            messages=messages,
            max_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == len(ids) - 1  # the same prompt again: a hit


def test_stop_strings_cut_the_text(client, oracle):
    model, tok = oracle
    full = mlx_llama.generate(model, tok, "Once upon a time", max_tokens=24)
    word = full.split()[5]
    out = client.completions.create(
        model="d", prompt="Once upon a time", max_tokens=24, temperature=0, stop=["zzz", word]
    )
    assert out.choices[0].text == full[: full.index(word)] and out.choices[0].finish_reason == "stop"
    stream = client.completions.create(
        model="d", prompt="Once upon a time", max_tokens=24, temperature=0, stop=[word], stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == full[: full.index(word)]


def test_seed_repeats_and_matches_generate(client, oracle):
    model, tok = oracle
    kw = dict(model="d", prompt="It was a dark", max_tokens=16, temperature=1.0, top_p=0.9)
    a = client.completions.create(seed=7, **kw).choices[0].text
    assert a == client.completions.create(seed=7, **kw).choices[0].text
    assert a == mlx_llama.generate(model, tok, "It was a dark", max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    others = {client.completions.create(seed=s, **kw).choices[0].text for s in (8, 9, 10)}
    assert others - {a}


def test_n_choices_share_the_prompt(client, oracle):
    model, tok = oracle
    out = client.completions.create(model="d", prompt="The weather", max_tokens=8, temperature=1.0, n=3, seed=3)
    assert [c.index for c in out.choices] == [0, 1, 2]
    expected = [
        mlx_llama.generate(model, tok, "The weather", max_tokens=8, temperature=1.0, seed=3 + i) for i in range(3)
    ]
    assert [c.text for c in out.choices] == expected
    assert out.usage.completion_tokens == 24 and out.usage.prompt_tokens == len(tok.encode("The weather"))


def test_logprobs_are_the_models(client, oracle):
    model, tok = oracle
    messages = [{"role": "user", "content": "Hello there."}]
    ids = chat_ids(tok, messages)
    out = client.chat.completions.create(
        model="d",
        messages=messages,
        max_tokens=1,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        logit_bias={str(tok.eos_token_id): -100},
    )
    entry = out.choices[0].logprobs.content[0]
    logits = model(mx.array([ids])).logits[0, -1].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits)
    best = mx.argsort(-logprobs)[:3].tolist()  # the raw distribution, eos included
    chosen = max((i for i in range(len(tok)) if i != tok.eos_token_id), key=lambda i: logprobs[i].item())
    assert entry.logprob == pytest.approx(logprobs[chosen].item(), abs=1e-4)  # logprobs ignore the bias
    assert [t.logprob for t in entry.top_logprobs] == pytest.approx([logprobs[i].item() for i in best], abs=1e-4)
    assert entry.token == tok.convert_ids_to_tokens(chosen).replace("\u2581", " ")
    comp = client.completions.create(model="d", prompt="Once upon a time", max_tokens=4, temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == 4 and all(v <= 0 for v in lp.token_logprobs) and len(lp.top_logprobs[0]) == 2
    assert "".join(lp.tokens).strip() == comp.choices[0].text.strip()


def test_logit_bias_and_penalties_change_the_choice(client, oracle):
    model, tok = oracle
    base = client.completions.create(model="d", prompt="Once upon a time", max_tokens=1, temperature=0)
    first = mx.argmax(model(mx.array([tok.encode("Once upon a time")])).logits[0, -1]).item()
    assert tok.decode([first]) == base.choices[0].text
    banned = client.completions.create(
        model="d", prompt="Once upon a time", max_tokens=1, temperature=0, logit_bias={str(first): -100}
    )
    assert banned.choices[0].text != base.choices[0].text
    kw = dict(model="d", prompt="Once upon a time", max_tokens=40, temperature=0)
    plain = client.completions.create(**kw).choices[0].text
    assert client.completions.create(frequency_penalty=2.0, **kw).choices[0].text != plain
    rep = client.completions.create(extra_body={"repetition_penalty": 1.3}, **kw).choices[0].text
    assert rep == mlx_llama.generate(model, tok, "Once upon a time", max_tokens=40, repetition_penalty=1.3)


def test_json_modes_give_valid_json(client):
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "count": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["answer", "count", "ok"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Answer in JSON."}]
    out = client.chat.completions.create(
        model="d",
        messages=messages,
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    value = json.loads(out.choices[0].message.content)
    assert set(value) == {"answer", "count", "ok"} and value["answer"] in ("yes", "no")
    assert isinstance(value["count"], int) and isinstance(value["ok"], bool)
    for seed in (1, 2, 3, 4):
        out = client.chat.completions.create(
            model="d",
            messages=messages,
            max_tokens=40,
            temperature=1.0,
            seed=seed,
            response_format={"type": "json_object"},
        )
        assert out.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(out.choices[0].message.content), dict)
    for max_tokens in (3, 6, 9):  # the output closes itself within a small budget
        out = client.completions.create(
            model="d",
            prompt="{",
            max_tokens=max_tokens,
            temperature=1.0,
            seed=5,
            extra_body={"response_format": {"type": "json_object"}},
        )
        assert out.choices[0].finish_reason == "stop" and out.usage.completion_tokens <= max_tokens
        assert isinstance(json.loads(out.choices[0].text), dict)


def test_eight_concurrent_clients_get_the_greedy_results(client, oracle):
    model, tok = oracle
    expected = [mlx_llama.generate(model, tok, p, max_tokens=32) for p in PROMPTS]

    def ask(prompt):
        return client.completions.create(model="d", prompt=prompt, max_tokens=32, temperature=0).choices[0].text

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, PROMPTS))
    assert got == expected


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["mlx-llama-demo"]
    with server.http() as http:
        health = http.get("/health").json()
    assert health["status"] == "ok" and health["active"] == 0


CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]
BAD_REQUESTS = [
    (COMP, b'{"model": "x", "prompt": ', None, "invalid_json"),
    (COMP, b"[1, 2]", None, "invalid_json"),
    (COMP, {"prompt": "a"}, "model", "missing_required_parameter"),
    (CHAT, {"model": "x"}, "messages", "missing_required_parameter"),
    (COMP, {"model": "x"}, "prompt", "missing_required_parameter"),
    (CHAT, {"model": "x", "messages": []}, "messages", "invalid_value"),
    (CHAT, {"model": "x", "messages": [{"role": "wizard", "content": "a"}]}, "messages[0].role", "invalid_value"),
    (CHAT, {"model": "x", "messages": [{"role": "user", "content": 3}]}, "messages[0].content", "invalid_type"),
    (CHAT, {"model": "x", "messages": MSG, "temperature": "hot"}, "temperature", "invalid_type"),
    (CHAT, {"model": "x", "messages": MSG, "temperature": 3}, "temperature", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "top_p": 1.5}, "top_p", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "top_k": -1}, "top_k", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "min_p": 2}, "min_p", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "n": 0}, "n", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "max_tokens": 0}, "max_tokens", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "max_tokens": "10"}, "max_tokens", "invalid_type"),
    (COMP, {"model": "x", "prompt": "a", "max_tokens": True}, "max_tokens", "invalid_type"),
    (CHAT, {"model": "x", "messages": MSG, "max_completion_tokens": -5}, "max_completion_tokens", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "seed": 1.5}, "seed", "invalid_type"),
    (COMP, {"model": "x", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "stop": 5}, "stop", "invalid_type"),
    (COMP, {"model": "x", "prompt": "a", "logit_bias": {"abc": 1}}, "logit_bias", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "logit_bias": {"99999": 1}}, "logit_bias", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "logit_bias": {"5": 500}}, "logit_bias", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "presence_penalty": 3}, "presence_penalty", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "frequency_penalty": -3}, "frequency_penalty", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "repetition_penalty": 0}, "repetition_penalty", "invalid_value"),
    (COMP, {"model": "x", "prompt": "a", "logprobs": 50}, "logprobs", "invalid_value"),
    (CHAT, {"model": "x", "messages": MSG, "top_logprobs": 2}, "top_logprobs", "invalid_value"),
    (
        CHAT,
        {"model": "x", "messages": MSG, "stream_options": {"include_usage": True}},
        "stream_options",
        "invalid_value",
    ),
    (CHAT, {"model": "x", "messages": MSG, "tools": []}, "tools", "unsupported_parameter"),
    (COMP, {"model": "x", "prompt": "a", "echo": True}, "echo", "unsupported_parameter"),
    (COMP, {"model": "x", "prompt": ["a", "b"]}, "prompt", "invalid_value"),
    (COMP, {"model": "x", "prompt": [1, 99999]}, "prompt", "invalid_value"),
    (
        CHAT,
        {"model": "x", "messages": MSG, "response_format": {"type": "xml"}},
        "response_format.type",
        "invalid_value",
    ),
    (
        CHAT,
        {
            "model": "x",
            "messages": MSG,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": "string", "pattern": "^a+$"}},
            },
        },
        "response_format.json_schema",
        "unsupported_schema",
    ),
    (COMP, {"model": "x", "prompt": "word " * 300}, "prompt", "context_length_exceeded"),
]


@pytest.mark.parametrize("path,body,param,code", BAD_REQUESTS)
def test_bad_requests_get_400_with_an_openai_error_body(server, path, body, param, code):
    with server.http() as http:
        if isinstance(body, bytes):
            r = http.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_the_openai_client_raises_on_a_bad_request(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="d", messages=MSG, temperature=7)


def test_unknown_paths_are_404_and_wrong_methods_405(server):
    with server.http() as http:
        r = http.get("/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = http.get(COMP)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_requests_joining_a_running_batch_match_generate(client, oracle):
    model, tok = oracle
    long_prompt, short = "It was a dark", ["He", "The house was", "My dear sister, I"]
    expected_long = mlx_llama.generate(model, tok, long_prompt, max_tokens=120)
    expected = [mlx_llama.generate(model, tok, p, max_tokens=10) for p in short]
    stream = client.completions.create(model="d", prompt=long_prompt, max_tokens=120, temperature=0, stream=True)
    parts, got = [], None
    with ThreadPoolExecutor(3) as pool:
        for n, chunk in enumerate(stream):
            parts.append(chunk.choices[0].text)
            if n == 10:  # the long row is decoding: these join it, shorter, so it gets left-padded rows
                futures = [
                    pool.submit(
                        lambda p=p: (
                            client.completions.create(model="d", prompt=p, max_tokens=10, temperature=0).choices[0].text
                        )
                    )
                    for p in short
                ]
        got = [f.result() for f in futures]
    assert "".join(parts) == expected_long and got == expected


def test_top_k_1_is_greedy_and_min_p_1_too(client, oracle):
    model, tok = oracle
    greedy = mlx_llama.generate(model, tok, "The weather", max_tokens=12)
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        out = client.completions.create(
            model="d", prompt="The weather", max_tokens=12, temperature=1.5, seed=0, extra_body=extra
        )
        assert out.choices[0].text == greedy


def test_streamed_choices_match_the_non_streamed_ones(client):
    kw = dict(
        model="d",
        messages=[{"role": "user", "content": "Say something."}],
        max_tokens=10,
        temperature=1.0,
        seed=11,
        n=2,
    )
    whole = client.chat.completions.create(**kw)
    texts = {0: "", 1: ""}
    finish = {}
    for chunk in client.chat.completions.create(stream=True, **kw):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert finish == {c.index: c.finish_reason for c in whole.choices}
