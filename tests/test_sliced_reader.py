"""The sliced safetensors reader against the safetensors library's own reader, and its header checks."""

import json
import struct

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from mlx_llama.checkpoint.sliced import SlicedReader  # noqa: E402
from mlx_llama.errors import CheckpointError  # noqa: E402


@pytest.fixture
def checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.standard_normal((8, 6)).astype(np.float32),
        "h": rng.standard_normal((4, 10)).astype(np.float16),
        "q": rng.integers(0, 2**32, size=(6, 4), dtype=np.uint32),
        "b": rng.standard_normal((8, 4)).astype(np.float32),  # read as bfloat16 below
    }
    path = tmp_path / "m.safetensors"
    save_file({k: (torch.from_numpy(v).to(torch.bfloat16) if k == "b" else torch.from_numpy(v.copy()))
               for k, v in tensors.items()}, str(path))
    return path


def test_slices_equal_the_library_reader(checkpoint):
    ref = {k: v.float().numpy() if k == "b" else v.numpy() for k, v in load_file(str(checkpoint)).items()}
    reader = SlicedReader([checkpoint])
    assert sorted(reader.keys()) == ["a", "b", "h", "q"]
    np.testing.assert_array_equal(np.array(reader.read("a", 0, 2, 6)), ref["a"][2:6])
    np.testing.assert_array_equal(np.array(reader.read("a", 1, 3, 6)), ref["a"][:, 3:6])
    np.testing.assert_array_equal(np.array(reader.read("h", 1, 5, 10)), ref["h"][:, 5:10])
    np.testing.assert_array_equal(np.array(reader.read("q", 1, 2, 4)), ref["q"][:, 2:])
    assert reader.bytes_read == (4 * 6 + 8 * 3) * 4 + 4 * 5 * 2 + 6 * 2 * 4  # only the slices were copied
    got = reader.read("b", 0, 4, 8)
    assert got.dtype == mx.bfloat16
    np.testing.assert_array_equal(np.array(got.astype(mx.float32)), ref["b"][4:])
    assert reader.part_range("a", 1, 1, 2) == (3, 6)
    with pytest.raises(CheckpointError, match="axis 1 of size 6 cannot be split evenly across 4 ranks"):
        reader.part_range("a", 1, 0, 4)


def write_raw(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("header, data, message", [
    ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "data_offsets"),
    ({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "do not fit its shape"),
    ({"t": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype 'Q7' is not supported"),
    ({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "non-negative integers"),
])
def test_bad_headers_name_the_tensor(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, data)
    with pytest.raises(CheckpointError, match=f"tensor t: .*{message}"):
        SlicedReader([path])


def test_header_length_is_capped_and_checked(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 200 * 10**6) + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        SlicedReader([path])
    path.write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(CheckpointError, match="JSON object"):
        SlicedReader([path])
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        SlicedReader([path])
