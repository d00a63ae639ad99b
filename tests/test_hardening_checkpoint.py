"""Hostile checkpoint files fail with CheckpointError naming the file and what is wrong, and never leak,
crash or allocate without bound. Every file is built in the test (see hostile_files.py)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from support.hostile_files import build, f32_entry, glob, i, s, safetensors, state_dict, storage, tensor, torch_zip, tup

import mlx_llama  # noqa: F401  (before mlx.core)
from mlx_llama.checkpoint.index import shard_files
from mlx_llama.checkpoint.safetensors_io import load_safetensors, parse_size, read_safetensors_header
from mlx_llama.checkpoint.torch_pickle import load_torch_file
from mlx_llama.errors import CheckpointError, ConfigError

FOUR = np.arange(4, dtype=np.float32)


# ---- torch pickles ---------------------------------------------------------------------------------------
def test_a_well_formed_hand_written_pickle_loads(tmp_path):
    """Positive control for the builders: the same stream without the attack reads back its four floats."""
    path = torch_zip(tmp_path / "ok.bin", state_dict({"w": tensor(storage())}), {"0": FOUR.tobytes()})
    np.testing.assert_array_equal(load_torch_file(path)["w"].numpy(), FOUR)


def test_build_on_a_storage_cannot_point_it_at_another_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2 " * 8)
    hijacked = build(storage(), {"path": s(str(secret)), "numel": i(32), "data_offset": i(0)})
    path = torch_zip(tmp_path / "evil.bin", state_dict({"w": tensor(hijacked, size=(32,))}))
    with pytest.raises(CheckpointError, match=r"evil\.bin.*BUILD"):
        load_torch_file(path)


def test_build_on_a_tensor_or_a_rebuild_function_is_refused(tmp_path):
    on_tensor = build(tensor(storage()), {"shape": tup(i(10**6))})
    with pytest.raises(CheckpointError, match="BUILD"):
        load_torch_file(torch_zip(tmp_path / "a.bin", state_dict({"w": on_tensor})))
    on_function = glob("torch._utils", "_rebuild_tensor_v2") + b"}(" + s("__defaults__") + tup(i(0)) + b"ub0"
    with pytest.raises(CheckpointError, match="BUILD"):
        stream = b"\x80\x02" + on_function + state_dict({"w": tensor(storage())})[2:]
        load_torch_file(torch_zip(tmp_path / "b.bin", stream))


@pytest.mark.parametrize(
    "offset, size, stride, expected",
    [
        (0, (4,), (-1,), "negative"),
        (-2, (2,), (1,), "negative"),
        (0, (10**9, 10**9), (0, 0), "overlap"),
        (0, (2, 2), (1, 1), "overlap"),
        (0, (5,), (1,), "overruns"),
        (3, (2,), (1,), "overruns"),
    ],
)
def test_views_outside_or_overlapping_their_storage(tmp_path, offset, size, stride, expected):
    path = torch_zip(tmp_path / "v.bin", state_dict({"w": tensor(storage(), offset, size, stride)}))
    with pytest.raises(CheckpointError, match=rf"v\.bin: tensor 'w'.*{expected}"):
        load_torch_file(path)


def test_storage_larger_than_its_blob_and_non_integer_sizes(tmp_path):
    with pytest.raises(CheckpointError, match=r"holds 16 bytes, its tensors need 400"):
        load_torch_file(torch_zip(tmp_path / "big.bin", state_dict({"w": tensor(storage(numel=100))})))
    two_point_oh = b"G@\x00\x00\x00\x00\x00\x00\x00"  # BINFLOAT 2.0 as a dimension
    float_size = glob("torch._utils", "_rebuild_tensor_v2") + b"(" + storage() + i(0) + b"(" + two_point_oh + b"t"
    float_size += tup(i(1)) + b"\x89" + glob("collections", "OrderedDict") + b")RtR"
    with pytest.raises(CheckpointError, match="integers"):
        load_torch_file(torch_zip(tmp_path / "f.bin", state_dict({"w": float_size})))


def test_huge_memo_index_and_deep_nesting(tmp_path):
    memo = b"\x80\x02}r\xff\xff\xff\x7f."  # LONG_BINPUT 2**31-1 would size the memo to 16 GB
    with pytest.raises(CheckpointError, match=r"memo\.bin.*memo index"):
        load_torch_file(torch_zip(tmp_path / "memo.bin", memo))
    nested = b"\x80\x02" + (b"}(" + s("a")) * 200 + b"}" + b"u" * 200 + b"."
    with pytest.raises(CheckpointError, match=r"deep\.bin.*nested deeper"):
        load_torch_file(torch_zip(tmp_path / "deep.bin", nested))
    lists = b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b"."
    with pytest.raises(CheckpointError, match="no tensors"):
        load_torch_file(torch_zip(tmp_path / "lists.bin", lists))


def test_compressed_members_and_hostile_byteorder(tmp_path):
    ok = state_dict({"w": tensor(storage())})
    with pytest.raises(CheckpointError, match=r"z\.bin: member 'archive/data\.pkl' is compressed"):
        load_torch_file(torch_zip(tmp_path / "z.bin", ok, compress_pickle=True))
    with pytest.raises(CheckpointError, match=r"byteorder is 20000 bytes, more than the 16") as info:
        load_torch_file(torch_zip(tmp_path / "b.bin", ok, byteorder=b"x" * 20000))
    assert len(str(info.value)) < 300
    with pytest.raises(CheckpointError, match=r"byteorder is b'\\xff\\xfe'"):
        load_torch_file(torch_zip(tmp_path / "u.bin", ok, byteorder=b"\xff\xfe"))
    with pytest.raises(CheckpointError, match="big"):
        load_torch_file(torch_zip(tmp_path / "e.bin", ok, byteorder=b"big"))


def test_forbidden_globals_are_named_and_truncated(tmp_path):
    evil = b"\x80\x02" + glob("os", "system" + "x" * 500) + b"."
    with pytest.raises(CheckpointError, match=r"g\.bin: the pickle asks for the global os\.systemx+, which") as info:
        load_torch_file(torch_zip(tmp_path / "g.bin", evil))
    assert len(str(info.value)) < 400


# ---- safetensors headers ---------------------------------------------------------------------------------
def _one(path, **entry):
    return safetensors(path, {"w": {**f32_entry([4], 0), **entry}}, FOUR.tobytes())


def test_a_hand_written_safetensors_file_loads(tmp_path):
    path = _one(tmp_path / "ok.safetensors")
    np.testing.assert_array_equal(read_safetensors_header(path)["w"].numpy(), FOUR)
    np.testing.assert_array_equal(np.array(load_safetensors(path)["w"]), FOUR)


@pytest.mark.parametrize(
    "header, expected",
    [
        ([1, 2], "must be a JSON object, got list"),
        (3, "must be a JSON object, got int"),
        (None, "must be a JSON object, got NoneType"),
        ({"w": [1]}, "tensor 'w': header entry must be an object"),
        ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "shape \\[-4\\] must be a list of non-neg"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, "two non-negative integers"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, "hold -16 bytes"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0.0, 16.0]}}, "two non-negative integers"),
        ({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, "must be a list of non-negative"),
        ({"w": {"dtype": "F8_E9", "shape": [4], "data_offsets": [0, 16]}}, "unsupported dtype 'F8_E9'"),
        ({"w": {"dtype": "F32", "shape": [0, 7], "data_offsets": [0, 0]}}, "16 bytes after the last tensor"),
        ({"a": f32_entry([2], 0), "b": f32_entry([3], 4)}, "tensor 'b' \\(data_offsets \\[4, 16\\]\\) overlaps"),
        ({"a": f32_entry([1], 0), "b": f32_entry([2], 8)}, "tensor 'b' .* leaves a gap at byte 4"),
        ({"w": f32_entry([8], 0)}, "tensor 'w' runs past the end"),
        ({"__metadata__": {"format": 1}, "w": f32_entry([4], 0)}, "__metadata__ must be an object of strings"),
    ],
)
def test_malformed_headers(tmp_path, header, expected):
    path = safetensors(tmp_path / "m.safetensors", header, FOUR.tobytes())
    with pytest.raises(CheckpointError, match=r"m\.safetensors: .*" + expected):
        read_safetensors_header(path)
    with pytest.raises(CheckpointError, match=r"m\.safetensors"):
        load_safetensors(path)  # the loader validates before MLX parses the file


def test_header_length_limits_and_duplicates(tmp_path):
    huge = safetensors(tmp_path / "h.safetensors", {}, length=1_500_000_000)
    with pytest.raises(CheckpointError, match="header of 1500000000 bytes exceeds the 100000000 limit"):
        read_safetensors_header(huge)
    short = safetensors(tmp_path / "s.safetensors", {}, length=5000)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_safetensors_header(short)
    entry = json.dumps(f32_entry([4], 0)).encode()
    twice = b'{"w": ' + entry + b', "w": ' + entry + b"}"
    with pytest.raises(CheckpointError, match="the name 'w' appears twice"):
        read_safetensors_header(safetensors(tmp_path / "d.safetensors", twice, FOUR.tobytes()))
    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        read_safetensors_header(safetensors(tmp_path / "r.safetensors", deep))
    (tmp_path / "t.safetensors").write_bytes(struct.pack("<I", 3))
    with pytest.raises(CheckpointError, match="no header"):
        read_safetensors_header(tmp_path / "t.safetensors")


# ---- indexes and paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors", 7, ""])
def test_index_entries_must_stay_inside_the_directory(tmp_path, name):
    model = tmp_path / "model"
    model.mkdir()
    _one(tmp_path / "outside.safetensors")
    _one(model / "model-1.safetensors")
    index = {"weight_map": {"w": "model-1.safetensors", "v": name}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: weight_map"):
        shard_files(model / "model.safetensors.index.json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json"):
        load_safetensors(model)


def test_a_symlink_out_of_the_directory_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    _one(tmp_path / "elsewhere.safetensors")
    os.symlink(tmp_path / "elsewhere.safetensors", model / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is a link to .*elsewhere\.safetensors, outside"):
        load_safetensors(model)
    inner = tmp_path / "inner"
    inner.mkdir()
    _one(inner / "real.safetensors")
    os.symlink(inner / "real.safetensors", inner / "model.safetensors")  # inside: fine
    assert set(load_safetensors(inner)) == {"w"}


@pytest.mark.parametrize("size", ["1e400GB", "-5GB", "0", "nanGB", "abc", "5XB", True])
def test_bad_shard_sizes(size):
    with pytest.raises(ConfigError, match="invalid shard size"):
        parse_size(size)
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("1.5MB") == 1_500_000 and parse_size(1000) == 1000
