"""A Transformers checkpoint directory as a conversion source: config.json plus safetensors (preferred) or
pytorch_model*.bin weights, sharded with an index or not."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConversionError, shorten
from ..jsonio import read_json_object
from .index import shard_files
from .lazy_tensor import LazyTensor
from .paths import inside
from .safetensors_header import read_safetensors_header
from .spec import TensorSpec
from .torch_pickle import load_torch_file

SUPPORTED_MODEL_TYPES = ("llama", "open-llama")
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
_LAYOUTS: tuple[tuple[str, str, Callable[[Path], dict[str, LazyTensor]]], ...] = (
    ("model.safetensors.index.json", "*.safetensors", read_safetensors_header),
    ("pytorch_model.bin.index.json", "pytorch_model*.bin", load_torch_file),
)


def is_rope_buffer(name: str) -> bool:
    """Old checkpoints saved the rotary inverse frequencies as a buffer; they are not weights."""
    return name.endswith("rotary_emb.inv_freq")


class TransformersSource:
    """config.json + weights; `specs()` lists the tensors, `read(name)` returns one as numpy (bf16 as uint16)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.config = read_json_object(directory / "config.json")
        model_type = self.config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            arch = self.config.get("architectures")
            arch = ", ".join(map(str, arch)) if isinstance(arch, list) and arch else "no architectures"
            raise ConversionError(
                f"{directory / 'config.json'}: unsupported architecture model_type={shorten(model_type)} "
                f"({shorten(arch, 120)}); this converter handles {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        self.tensors: dict[str, LazyTensor] = {}
        files, reader = self._weight_files()
        for path in files:
            for name, tensor in reader(path).items():
                if name in self.tensors:
                    raise CheckpointError(f"{path}: tensor {shorten(name)} also appears in another shard")
                if not is_rope_buffer(name):
                    self.tensors[name] = tensor
        if not self.tensors:
            raise CheckpointError(f"{directory}: the weight files hold no tensors")

    def _weight_files(self) -> tuple[list[Path], Callable[[Path], dict[str, LazyTensor]]]:
        d = self.directory
        for index_name, pattern, reader in _LAYOUTS:
            if (d / index_name).is_file():
                return shard_files(inside(d, index_name, str(d))), reader
            files = sorted(d.glob(pattern))
            if files:
                return [inside(d, p.name, str(d)) for p in files], reader
        raise CheckpointError(f"{d}: config.json found but no *.safetensors or pytorch_model*.bin weights")

    def specs(self) -> list[TensorSpec]:
        return [TensorSpec(n, t.shape, t.dtype) for n, t in self.tensors.items()]

    def read(self, name: str) -> np.ndarray:
        return self.tensors[name].numpy()

    def write_tokenizer(self, out: Path) -> None:
        """Copy the tokenizer and generation files that exist (each confined to the source directory)."""
        for name in TOKENIZER_FILES:
            path = inside(self.directory, name, str(self.directory))
            if path.is_file():
                shutil.copyfile(path, out / name)
        templates = self.directory / "additional_chat_templates"  # named templates, one .jinja file each
        if templates.is_dir() and not templates.is_symlink():
            (out / templates.name).mkdir()
            for entry in sorted(templates.glob("*.jinja")):
                path = inside(self.directory, f"{templates.name}/{entry.name}", str(self.directory))
                if path.is_file():
                    shutil.copyfile(path, out / templates.name / entry.name)
