"""The torch-free .pth/.bin reader against torch.load itself, and its refusal of anything but tensors."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mlx_llama.checkpoint.torch_pickle import load_torch_file
from mlx_llama.errors import CheckpointError


class _RunsCommand:
    """A pickle payload that runs a shell command when unpickled by a trusting loader."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def test_views_offsets_strides_and_dtypes_match_torch(tmp_path):
    torch.manual_seed(0)
    flat = torch.randn(5000).to(torch.bfloat16)
    linear = torch.nn.Linear(6, 4)
    state = {
        "slice": flat[7:31].view(4, 6),  # offset into a shared storage
        "transposed": flat[100:160].view(6, 10).t(),  # non-contiguous strides
        "stepped": flat[1000:3000].view(20, 100)[2:9, ::7],  # offset + strides together
        "param": linear.weight,  # an nn.Parameter
        "f16": torch.randn(3, 5).half(),
        "f64": torch.randn(4, dtype=torch.float64),
        "i64": torch.arange(-3, 9),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 4),
        "nested": collections.OrderedDict(inner=linear.state_dict()),
    }
    path = tmp_path / "mixed.pth"
    torch.save(state, path)
    reference = torch.load(path, weights_only=True)
    got = load_torch_file(path)
    expected = {k: v for k, v in reference.items() if k != "nested"}
    expected.update({f"nested.inner.{k}": v for k, v in reference["nested"]["inner"].items()})
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        array = got[name].numpy()
        assert array.shape == tuple(tensor.shape), name
        np.testing.assert_array_equal(array, _as_numpy(tensor), err_msg=name)
    assert got["slice"].dtype == "bfloat16" and got["f16"].dtype == "float16" and got["param"].dtype == "float32"


def test_read_into_a_strided_destination(tmp_path):
    w = torch.arange(24, dtype=torch.float32).view(4, 6)
    torch.save({"w": w}, tmp_path / "w.pth")
    out = np.zeros((4, 12), dtype=np.float32)
    load_torch_file(tmp_path / "w.pth")["w"].numpy(out=out[:, 3:9])
    np.testing.assert_array_equal(out[:, 3:9], w.numpy())
    assert not out[:, :3].any() and not out[:, 9:].any()


def test_module_state_dict_with_metadata(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    torch.save(model.state_dict(), tmp_path / "sd.bin")  # an OrderedDict carrying `_metadata`
    got = load_torch_file(tmp_path / "sd.bin")
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(got[name].numpy(), tensor.numpy())


@pytest.mark.subprocess
def test_reads_without_torch_installed(tmp_path):
    torch.save({"w": torch.arange(6, dtype=torch.bfloat16).view(2, 3)}, tmp_path / "w.pth")
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from mlx_llama.checkpoint.torch_pickle import load_torch_file\n"
        f"t = load_torch_file({str(tmp_path / 'w.pth')!r})['w']\n"
        "print(t.dtype, t.shape, t.numpy().tolist())\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr
    # bfloat16 bit patterns of 0..5: 0, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0
    assert proc.stdout.split("\n")[0] == "bfloat16 (2, 3) [[0, 16256, 16384], [16448, 16512, 16544]]"


def test_os_system_in_the_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "payload": _RunsCommand(f"touch {marker}")}, path)
    # The payload is live: a trusting loader runs it.
    trusted_marker = tmp_path / "trusted"
    torch.save({"payload": _RunsCommand(f"touch {trusted_marker}")}, tmp_path / "live.pth")
    torch.load(tmp_path / "live.pth", weights_only=False)
    assert trusted_marker.exists()
    with pytest.raises(CheckpointError, match=r"evil\.pth.*(posix|os)\.system"):
        load_torch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("global_name", ["builtins eval", "builtins getattr", "torch load", "numpy frombuffer"])
def test_any_other_global_is_refused(tmp_path, global_name):
    path = tmp_path / "g.pth"
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    # protocol 2: GLOBAL <name>, an empty tuple, REDUCE, STOP
    members[pkl] = b"\x80\x02c" + global_name.replace(" ", "\n").encode() + b"\n)R."
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=global_name.replace(" ", ".")):
        load_torch_file(path)


def test_truncated_corrupt_and_legacy_files(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    for bad in (truncated, garbage, legacy):
        with pytest.raises(CheckpointError, match=bad.name):
            load_torch_file(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        load_torch_file(tmp_path / "absent.pth")
