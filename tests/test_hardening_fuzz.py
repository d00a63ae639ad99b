"""Fuzzing the readers with hypothesis (bounded, derandomized for CI): for any safetensors header, pickle
stream, config.json or tokenizer_config.json value, the only outcomes are success or the project's own errors."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support.hostile_files import build, glob, i, s, state_dict, storage, tensor, torch_zip, tup

import mlx_llama  # noqa: F401  (before mlx.core)
from mlx_llama.checkpoint.safetensors_io import load_safetensors, read_safetensors_header
from mlx_llama.checkpoint.torch_pickle import load_torch_file
from mlx_llama.config import LlamaConfig
from mlx_llama.errors import CheckpointError, ConfigError, MlxLlamaError
from mlx_llama.open_llama_config import OpenLlamaConfig
from mlx_llama.tokenizer import LlamaTokenizer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "mlx_llama" / "assets" / "demo"
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
small_ints = st.integers(-3, 40) | st.sampled_from([2**31, 2**40, 2**63 - 1])


# ---- safetensors headers ---------------------------------------------------------------------------------
entries = (
    st.fixed_dictionaries(
        {
            "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "f32"]) | json_values,
            "shape": st.lists(small_ints, max_size=3) | json_values,
            "data_offsets": st.lists(small_ints, min_size=2, max_size=2) | json_values,
        }
    )
    | json_values
)
headers = st.dictionaries(st.text(max_size=6), entries, max_size=4) | json_values


@FUZZ
@given(header=headers, data=st.binary(max_size=96), extra_length=st.integers(-8, 8))
def test_safetensors_headers(tmp_path, header, data, extra_length):
    blob = json.dumps(header).encode()
    length = max(0, len(blob) + (extra_length if abs(extra_length) < 4 else 0))
    path = tmp_path / "f.safetensors"
    path.write_bytes(struct.pack("<Q", length) + blob + data)
    try:
        tensors = read_safetensors_header(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return
    for t in tensors.values():
        assert t.numpy().nbytes == t.nbytes
    loaded = load_safetensors(path)  # what passed our checks, MLX reads
    assert set(loaded) == set(tensors)


# ---- pickle streams --------------------------------------------------------------------------------------
fragments = st.one_of(
    st.builds(
        storage,
        st.sampled_from(["0", "1", "../0", "x" * 70]),
        small_ints,
        st.sampled_from(["FloatStorage", "HalfStorage", "LongStorage", "BoolStorage"]),
    ),
    st.builds(
        lambda off, size, stride: tensor(storage(), off, tuple(size), tuple(stride)),
        small_ints,
        st.lists(small_ints, max_size=3),
        st.lists(small_ints, max_size=3),
    ),
    st.builds(lambda k, v: build(storage(), {k: i(v)}), st.sampled_from(["numel", "path", "data_offset"]), small_ints),
    st.builds(
        glob,
        st.sampled_from(["torch._utils", "collections", "os", "builtins", "torch"]),
        st.sampled_from(["_rebuild_tensor_v2", "OrderedDict", "system", "eval", "FloatStorage"]),
    ),
    st.builds(s, st.text(max_size=5)),
    st.builds(i, small_ints),
    st.binary(max_size=6),
    st.sampled_from(
        [
            b"(",
            b"t",
            b"R",
            b"b",
            b"u",
            b"s",
            b"}",
            b"]",
            b"a",
            b"Q",
            b"0",
            b"2",
            b"r\xff\xff\xff\xff",
            b"h\x00",
            b"j\x05\x00\x00\x00",
            b".",
        ]
    ),
)


@FUZZ
@given(body=st.lists(fragments, max_size=10), flip=st.integers(0, 400), keep_valid=st.booleans())
def test_pickle_streams(tmp_path, body, flip, keep_valid):
    valid = state_dict({"w": tensor(storage())})
    stream = b"\x80\x02" + b"".join(body) + b"."
    if keep_valid:  # a valid state dict, one byte changed
        stream = bytearray(valid)
        stream[flip % len(stream)] ^= 0x5A
        stream = bytes(stream)
    path = torch_zip(tmp_path / "f.bin", stream, {"0": np.arange(4, dtype=np.float32).tobytes()})
    try:
        tensors = load_torch_file(path)
    except CheckpointError as exc:
        assert str(path) in str(exc) and len(str(exc)) < 1000
        return
    for t in tensors.values():
        assert t.numpy().size == t.numel


def test_pickle_fuzz_controls(tmp_path):
    """The fuzzed shapes can succeed: a valid stream loads, a tuple of huge sizes is refused."""
    good = torch_zip(tmp_path / "g.bin", state_dict({"w": tensor(storage())}), {"0": bytes(16)})
    assert load_torch_file(good)["w"].numpy().tolist() == [0.0] * 4
    huge = torch_zip(tmp_path / "h.bin", state_dict({"w": tensor(storage(), 0, (2**40,), (1,))}), {"0": bytes(16)})
    with pytest.raises(CheckpointError, match="overruns"):
        load_torch_file(huge)
    assert tup(i(1)) == b"(J\x01\x00\x00\x00t"


# ---- config.json -----------------------------------------------------------------------------------------
BASE = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
FIELDS = sorted(set(LlamaConfig.__dataclass_fields__) - {"extra"}) + ["use_stable_embedding", "hidden_dropout_prob"]


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), json_values | small_ints, min_size=1, max_size=3),
    open_llama=st.booleans(),
)
def test_config_values(changes, open_llama):
    cls = OpenLlamaConfig if open_llama else LlamaConfig
    try:
        config = cls.from_dict({**BASE, **changes})
    except ConfigError:
        return
    assert cls.from_dict(config.to_dict()).to_dict() == config.to_dict()  # what loads also round-trips


# ---- tokenizer_config.json -------------------------------------------------------------------------------
TOKENIZER_FIELDS = [
    "add_bos_token",
    "add_eos_token",
    "legacy",
    "model_max_length",
    "chat_template",
    "bos_token",
    "eos_token",
    "pad_token",
    "unk_token",
    "additional_special_tokens",
    "added_tokens_decoder",
    "padding_side",
    "clean_up_tokenization_spaces",
    "sp_model_kwargs",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    shutil.copyfile(DEMO / "tokenizer.model", d / "tokenizer.model")
    return d


@settings(FUZZ, max_examples=60, phases=(Phase.explicit, Phase.generate))  # no shrinking: bounded time
@given(changes=st.dictionaries(st.sampled_from(TOKENIZER_FIELDS), json_values, min_size=1, max_size=2))
def test_tokenizer_config_values(tokenizer_dir, changes):
    base = json.loads((DEMO / "tokenizer_config.json").read_text())
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({**base, **changes}))
    try:
        tok = LlamaTokenizer.from_pretrained(tokenizer_dir)
        tok.decode(tok("a cat")["input_ids"])
    except MlxLlamaError:
        return
