"""A synthetic Meta Llama 3.1 checkpoint (tiktoken tokenizer.model, vocab-split embedding, scaled rope,
ffn_dim_multiplier, GQA) converted, then loaded by Transformers (the oracle: logits of the reference model
and tiktoken's ids) and by mlx-llama."""

from __future__ import annotations

import json

import numpy as np
import pytest
from convert_helpers import _to_meta_qk
from llama3_helpers import SMALL_RANKS, small_tiktoken_file, tiktoken_encoding

from mlx_llama import load
from mlx_llama.checkpoint.meta import MetaCheckpoint
from mlx_llama.convert import convert
from mlx_llama.tokenizer import AutoTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = SMALL_RANKS + 256
DIM, HEADS, KV, LAYERS = 64, 8, 2, 2
FFN = 224  # Meta: 32 * ceil(int(1.3 * int(8 * 64 / 3)) / 32)
ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}  # fmt: skip
TEXTS = ["Hello world! It's 2024.", "  indented\n\ncode = [1, 2, 3]  # ok", "Zürich 東京 😀"]


def reference():
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=DIM, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=ROPE, max_position_embeddings=131072, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).float())  # what a bf16 Meta checkpoint holds
    return model


def write_meta_llama3(model, directory, n_shards: int = 2):
    """consolidated.NN.pth bf16 shards as Meta's Llama 3 writes them: the embedding split over the vocabulary."""
    directory.mkdir(parents=True)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    meta = {"tok_embeddings.weight": (sd["model.embed_tokens.weight"], 0), "norm.weight": (sd["model.norm.weight"],
            None), "output.weight": (sd["lm_head.weight"], 0)}  # fmt: skip
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        meta[f"layers.{i}.attention.wq.weight"] = (_to_meta_qk(sd[p + "self_attn.q_proj.weight"], HEADS), 0)
        meta[f"layers.{i}.attention.wk.weight"] = (_to_meta_qk(sd[p + "self_attn.k_proj.weight"], KV), 0)
        meta[f"layers.{i}.attention.wv.weight"] = (sd[p + "self_attn.v_proj.weight"], 0)
        meta[f"layers.{i}.attention.wo.weight"] = (sd[p + "self_attn.o_proj.weight"], 1)
        meta[f"layers.{i}.feed_forward.w1.weight"] = (sd[p + "mlp.gate_proj.weight"], 0)
        meta[f"layers.{i}.feed_forward.w2.weight"] = (sd[p + "mlp.down_proj.weight"], 1)
        meta[f"layers.{i}.feed_forward.w3.weight"] = (sd[p + "mlp.up_proj.weight"], 0)
        meta[f"layers.{i}.attention_norm.weight"] = (sd[p + "input_layernorm.weight"], None)
        meta[f"layers.{i}.ffn_norm.weight"] = (sd[p + "post_attention_layernorm.weight"], None)
    for s in range(n_shards):
        shard = {
            name: (t if axis is None else torch.chunk(t, n_shards, dim=axis)[s]).to(torch.bfloat16).clone()
            for name, (t, axis) in meta.items()
        }
        torch.save(shard, directory / f"consolidated.{s:02d}.pth")
    params = {"dim": DIM, "n_layers": LAYERS, "n_heads": HEADS, "n_kv_heads": KV, "vocab_size": VOCAB,
              "ffn_dim_multiplier": 1.3, "multiple_of": 32, "norm_eps": 1e-5, "rope_theta": 500000.0,
              "use_scaled_rope": True}  # fmt: skip
    (directory / "params.json").write_text(json.dumps(params))
    (directory / "tokenizer.model").write_bytes(small_tiktoken_file().read_bytes())
    return directory


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    ref = reference()
    src = write_meta_llama3(ref, tmp_path_factory.mktemp("meta3") / "Llama3.1-Tiny-Instruct")
    out = convert(src, tmp_path_factory.mktemp("out") / "mlx", dtype="float32", instruct=True, quiet=True)
    return ref, src, out


def test_config_and_generation_config(converted):
    _, src, out = converted
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"] == {**ROPE} and config["max_position_embeddings"] == 131072
    assert (config["intermediate_size"], config["num_key_value_heads"], config["rope_theta"]) == (FFN, KV, 5e5)
    bos, eos = SMALL_RANKS, [SMALL_RANKS + 1, SMALL_RANKS + 8, SMALL_RANKS + 9]  # end_of_text, eom, eot
    assert (config["bos_token_id"], config["eos_token_id"], config["vocab_size"]) == (bos, eos, VOCAB)
    gen = transformers.GenerationConfig.from_pretrained(out)
    assert (gen.bos_token_id, gen.eos_token_id, gen.do_sample, gen.temperature, gen.top_p) == (bos, eos, True, 0.6, 0.9)
    v32 = MetaCheckpoint(src, llama_version="3.2").config
    assert v32["rope_scaling"]["factor"] == 32.0 and v32["tie_word_embeddings"] is True
    assert MetaCheckpoint(src).version == "3.1"  # inferred: tiktoken file + use_scaled_rope


def test_transformers_and_mlx_llama_load_the_output(converted):
    ref, _, out = converted
    encoding = tiktoken_encoding(small_tiktoken_file())
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours_tok = AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        expected = [SMALL_RANKS, *encoding.encode(text)]  # <|begin_of_text|> + tiktoken's ids
        assert hf_tok.encode(text) == expected == ours_tok.encode(text)
    chat = [{"role": "user", "content": "Hi!"}]
    assert ours_tok.apply_chat_template(chat, add_generation_prompt=True) == hf_tok.apply_chat_template(
        chat, add_generation_prompt=True
    )
    ids = np.array([[SMALL_RANKS, *encoding.encode(" ".join(TEXTS))]])
    with torch.no_grad():
        want = ref(torch.from_numpy(ids)).logits.numpy()
        hf = transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
        got_hf = hf(torch.from_numpy(ids)).logits.numpy()
    scale = np.abs(want).max()
    assert np.abs(got_hf - want).max() / scale < 1e-5
    import mlx.core as mx

    model, tok = load(out)
    got = np.array(model(mx.array(ids.astype(np.int32))).logits.astype(mx.float32))
    assert np.abs(got - want).max() / scale < 1e-4
    assert tok.encode(TEXTS[0]) == ours_tok.encode(TEXTS[0])
    assert model.generation_config.eos_token_ids == [SMALL_RANKS + 1, SMALL_RANKS + 8, SMALL_RANKS + 9]
