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
    save_file(
        {
            k: (torch.from_numpy(v).to(torch.bfloat16) if k == "b" else torch.from_numpy(v.copy()))
            for k, v in tensors.items()
        },
        str(path),
    )
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
    with pytest.raises(CheckpointError, match=r"tensor a of shape \[8, 6\] cannot be split evenly along axis 1"):
        reader.part_range("a", 1, 0, 4)


def test_every_shard_of_an_indexed_checkpoint(tmp_path):
    from mlx_llama.checkpoint.safetensors_io import checkpoint_files, save_safetensors

    weights = {f"w{i}": mx.arange(i * 100, i * 100 + 64, dtype=mx.float32).reshape(8, 8) for i in range(3)}
    save_safetensors(tmp_path, weights, max_shard_size=300)
    files = checkpoint_files(tmp_path)
    assert len(files) == 3
    reader = SlicedReader(files)
    for name, value in weights.items():
        np.testing.assert_array_equal(np.array(reader.read(name, 1, 4, 8)), np.array(value)[:, 4:])


def test_headers_are_validated_before_reading(tmp_path):
    path = tmp_path / "bad.safetensors"
    raw = json.dumps({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(CheckpointError, match="tensor 't': data_offsets"):
        SlicedReader([path])
    with pytest.raises(CheckpointError, match="missing from the checkpoint"):
        SlicedReader([]).read("t")
