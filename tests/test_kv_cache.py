"""Rotating and quantized KV caches against Transformers' logits (an explicit sliding-window mask for the
rotating cache), and prompt-cache files against Transformers' greedy generate on the joined prompt."""

import warnings

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.hf_llama import hf_tiny_model  # noqa: E402

import mlx_llama.cli as cli  # noqa: E402
from mlx_llama.cache import QuantizedKVCache, RotatingKVCache  # noqa: E402
from mlx_llama.errors import CheckpointError, ConfigError  # noqa: E402
from mlx_llama.generation.api import stream_generate  # noqa: E402
from mlx_llama.generation.loop import cache_arrays, prefill  # noqa: E402
from mlx_llama.generation.prompt_cache import load_prompt_cache, save_prompt_cache  # noqa: E402
from mlx_llama.modeling.heads import LlamaForCausalLM  # noqa: E402
from mlx_llama.tokenizer import LlamaTokenizer  # noqa: E402

VOCAB = 128


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """head_dim 32, so the KV cache can be quantized in groups of 32."""
    path = tmp_path_factory.mktemp("wide")
    hf = hf_tiny_model(VOCAB, hidden_size=128, intermediate_size=160, num_attention_heads=4, num_key_value_heads=2)
    hf.save_pretrained(path)
    return hf, LlamaForCausalLM.from_pretrained(path, dtype="float32")


def hf_logits(hf, ids, mask=None):
    with torch.no_grad():
        return hf(torch.tensor([ids]), attention_mask=mask).logits[0].double().numpy()


def window_mask(n, max_size, keep):
    """Additive [1, 1, n, n] mask: query t sees keys j <= t that are among the first `keep` or the last
    `max_size - keep` positions (what a rotating cache of `max_size` holds when t is decoded)."""
    t, j = np.arange(n)[:, None], np.arange(n)[None, :]
    allowed = (j <= t) & ((j < keep) | (t - j < max_size - keep))
    return torch.tensor(np.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None], dtype=torch.float32)


def test_rotating_cache_generates_past_the_window_in_bounded_memory(wide):
    hf, model = wide
    prompt, max_size, keep, new = [1, 9, 33, 4, 77, 12, 5, 8], 24, 4, 60
    out = model.generate(
        mx.array([prompt]),
        max_new_tokens=new,
        eos_token_id=[],
        cache_implementation="sliding_window",
        cache_config={"max_kv_size": max_size, "keep": keep},
    )
    seq = np.array(out)[0].tolist()
    assert len(seq) == len(prompt) + new > 2 * max_size
    # Teacher forcing through Transformers with the window as an explicit mask gives the same greedy tokens.
    logits = hf_logits(hf, seq[:-1], window_mask(len(seq) - 1, max_size, keep))
    assert logits[len(prompt) - 1 :].argmax(-1).tolist() == seq[len(prompt) :]
    # ... and the window matters: full attention diverges from it.
    full = hf_logits(hf, seq[:-1])
    assert full[len(prompt) - 1 :].argmax(-1).tolist() != seq[len(prompt) :]

    cache = model.make_cache(max_kv_size=max_size, keep=keep)
    sizes = []
    for token in seq:
        model(mx.array([[token]]), past_key_values=cache, use_cache=True)
        mx.eval(cache_arrays(cache))
        sizes.append(cache[0].nbytes)
    assert max(layer.keys.shape[2] for layer in cache) == max_size
    assert cache[0].offset == len(seq)
    assert sizes[-1] == sizes[max_size] == max(sizes)  # constant once the window is full


def test_rotating_cache_keeps_the_first_tokens_and_the_window_through_chunked_prefill(wide):
    _, model = wide
    prompt = np.random.default_rng(0).integers(3, VOCAB, 70).tolist()
    cache, full = model.make_cache(max_kv_size=32, keep=4), model.make_cache()
    prefill(model, cache, mx.array([prompt], dtype=mx.int32), step_size=16)
    model(mx.array([prompt]), past_key_values=full, use_cache=True)
    mx.eval(cache_arrays(cache), cache_arrays(full))
    assert all(layer.keys.shape[2] == 32 and layer.offset == 70 for layer in cache)
    # Layer 0's keys depend only on each token and its position: the kept ones are positions 0-3 and 42-69.
    kept, _ = cache[0]._ordered()
    expected = mx.concatenate([full[0].keys[..., :4, :], full[0].keys[..., 42:70, :]], axis=2)
    assert np.allclose(np.array(kept), np.array(expected), atol=1e-5)
    with pytest.raises(ConfigError, match="exceed"):
        RotatingKVCache(4, keep=4)


@pytest.mark.parametrize("bits, tolerance", [(8, 0.01), (4, 0.15)])
def test_quantized_cache_logits_close_to_transformers(wide, bits, tolerance):
    """Prefill 20 tokens, decode 20 more one at a time: max |logit error| / max |logit| (measured 0.0054 at 8
    bits, 0.102 at 4 bits)."""
    hf, model = wide
    seq = np.random.default_rng(1).integers(3, VOCAB, 40).tolist()
    ref = hf_logits(hf, seq)
    for start in (0, 24):  # 24: the 20-token prefill stays in float, quantized at position 24
        cache = model.make_cache(kv_bits=bits, kv_group_size=32, quantized_kv_start=start)
        got = [np.array(model(mx.array([seq[:20]]), past_key_values=cache, use_cache=True).logits[0])]
        for t in seq[20:]:
            got.append(np.array(model(mx.array([[t]]), past_key_values=cache, use_cache=True).logits[0]))
        err = np.abs(np.concatenate(got) - ref).max() / np.abs(ref).max()
        assert err < tolerance, (bits, start, err)
        assert isinstance(cache[0], QuantizedKVCache) and cache[0].keys is not None  # quantized by now
    floats = model.make_cache()
    model(mx.array([seq]), past_key_values=floats, use_cache=True)
    mx.eval(cache_arrays(floats), cache_arrays(cache))
    stored = sum(a.nbytes for a in cache_arrays(cache))
    assert stored < sum(a.nbytes for a in cache_arrays(floats)) * (bits + 2) / 32 + 1  # packed + scales/biases


def test_quantized_cache_rejects_bad_settings(wide):
    _, model = wide
    with pytest.raises(ConfigError, match="kv_bits"):
        QuantizedKVCache(bits=7)
    with pytest.raises(ConfigError, match="divide the head dimension"):
        model(mx.array([[1, 2]]), past_key_values=model.make_cache(kv_bits=4, kv_group_size=64))
    with pytest.raises(ConfigError, match="not both"):
        model.make_cache(kv_bits=4, max_kv_size=16)
    with pytest.raises(ConfigError, match="unknown option"):
        next(stream_generate(model, None, [1, 2], 2, kv_bitz=4))
    with pytest.raises(ConfigError, match="not with cache="):
        next(stream_generate(model, None, [1, 2], 2, cache=model.make_cache(), kv_bits=4))
    with pytest.raises(ConfigError, match="unpadded"):
        model.generate(
            mx.array([[0, 1, 2], [1, 2, 3]]),
            attention_mask=mx.array([[0, 1, 1], [1, 1, 1]]),
            cache_implementation="sliding_window",
            cache_config={"max_kv_size": 16},
        )


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    path, hf = tiny_checkpoint
    return path, hf, LlamaForCausalLM.from_pretrained(path, dtype="float32"), LlamaTokenizer.from_pretrained(path)


def hf_greedy(hf, ids, n):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.tensor([ids])
        out = hf.generate(
            t, attention_mask=torch.ones_like(t), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return out[0, len(ids) :].tolist()


def test_prompt_cache_round_trip(checkpoint, tmp_path):
    path, hf, model, tok = checkpoint
    p_ids, q_ids = [1, 14, 27, 33, 9, 40, 51], [61, 7, 19]
    cache = model.make_cache()
    prefill(model, cache, mx.array([p_ids]))
    save_prompt_cache(tmp_path / "p.safetensors", model, cache, p_ids, model_name="tiny")
    loaded, tokens = load_prompt_cache(tmp_path / "p.safetensors", model)
    assert tokens == p_ids
    got = [r.token for r in stream_generate(model, tok, q_ids, 12, cache=loaded, eos_token_id=[])]
    assert got == hf_greedy(hf, p_ids + q_ids, 12)


def test_quantized_prompt_cache_round_trip(wide, tmp_path):
    _, model = wide
    p_ids, q_ids = [1, 14, 27, 33, 9, 40, 51], [61, 7, 19]
    cache = model.make_cache(kv_bits=4, kv_group_size=32)
    prefill(model, cache, mx.array([p_ids]))
    save_prompt_cache(tmp_path / "q.safetensors", model, cache, p_ids)
    loaded, _ = load_prompt_cache(tmp_path / "q.safetensors", model)
    assert isinstance(loaded[0], QuantizedKVCache) and loaded[0].offset == len(p_ids)
    fresh = model.make_cache(kv_bits=4, kv_group_size=32)
    ids = mx.array([p_ids + q_ids])
    direct = model(ids, past_key_values=fresh, use_cache=True).logits[0, -1]
    resumed = model(mx.array([q_ids]), past_key_values=loaded, use_cache=True).logits[0, -1]
    # The same quantized keys either way (quantization is per position); only the matmul grouping differs.
    assert np.abs(np.array(direct) - np.array(resumed)).max() < 1e-4


def test_prompt_cache_from_another_model_is_refused(checkpoint, wide, tmp_path):
    _, _, model, _ = checkpoint
    cache = model.make_cache()
    prefill(model, cache, mx.array([[1, 5, 6]]))
    save_prompt_cache(tmp_path / "c.safetensors", model, cache, [1, 5, 6], model_name="tiny")
    with pytest.raises(CheckpointError, match="another model"):
        load_prompt_cache(tmp_path / "c.safetensors", wide[1])
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_prompt_cache(tmp_path / "junk.safetensors", model)


def test_cli_cache_prompt_then_generate(checkpoint, tmp_path, capsys):
    path, hf, _, tok = checkpoint
    file = tmp_path / "prompt.safetensors"
    p_text, q_text = "the cat sat on a mat", " and the dog ran"
    assert (
        cli.main(
            ["cache-prompt", "--model", str(path), "--prompt", p_text, "--prompt-cache-file", str(file), "--quiet"]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "generate",
                "--model",
                str(path),
                "--prompt-cache-file",
                str(file),
                "--prompt",
                q_text,
                "--max-tokens",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    ids = tok.encode(p_text) + tok.encode(q_text, add_special_tokens=False)
    new = hf_greedy(hf, ids, 8)
    new = new[: new.index(2)] if 2 in new else new
    assert capsys.readouterr().out.strip() == tok.decode(new).strip()
    assert (
        cli.main(
            ["generate", "--model", str(path), "--prompt-cache-file", str(file), "--prompt", "x", "--kv-bits", "4"]
        )
        == 2
    )
    assert "--prompt-cache-file brings its own KV cache" in capsys.readouterr().err
