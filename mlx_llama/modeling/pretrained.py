"""`from_pretrained` / `save_pretrained` for the model classes: Transformers directories in and out.

Loading is strict: a missing tensor, an unexpected one or a shape mismatch is an error naming the tensor.
Two exceptions mirror what users of Transformers rely on: a task head that the checkpoint lacks (loading a
causal-LM checkpoint into a classification class) is freshly initialised with a warning, and the other
heads' tensors are then ignored; and `model.*` keys load into the `transformer.*` base of the QA class.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..cache import KVCache, make_cache
from ..checkpoint.layers import check_layer_count
from ..checkpoint.safetensors_io import DEFAULT_MAX_SHARD_SIZE, load_safetensors, save_safetensors
from ..config import LlamaConfig
from ..dtypes import dtype_name
from ..errors import CheckpointError
from ..generation.config import GenerationConfig
from .cpu_linear import read_linear_weights, use_input_major_layout
from .fused import unfuse_weights
from .load_options import auto_dtype, pop_load_options, requested_dtype
from .quantized import quantize_model

HEAD_NAMES = ("lm_head", "score", "qa_outputs")


def is_cpu_backend() -> bool:
    """True when MLX computes on the CPU, where half-precision and quantized kernels are slow fallbacks."""
    return mx.default_device().type == mx.cpu


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def init_weights(model: nn.Module, std: float) -> None:
    """Transformers' init: Linear and Embedding weights ~ N(0, std), biases 0 (norm weights stay 1)."""
    for _, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight = mx.random.normal(module.weight.shape) * std
            if "bias" in module:
                module.bias = mx.zeros_like(module.bias)


class PreTrainedModel(nn.Module):
    """Shared loading/saving for every head. Subclasses set `config_class` and `base_model_prefix`."""

    config_class: type = LlamaConfig
    base_model_prefix = "model"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.generation_config = GenerationConfig.from_model_config(config)  # generation_config.json on load

    def post_init(self) -> None:
        """Initialise like Transformers (lazily: never computed if a checkpoint replaces it), zero the pad row."""
        init_weights(self, self.config.initializer_range)
        pad = self.config.pad_token_id
        base = self.base_model
        if pad is not None and 0 <= pad < base.embed_tokens.weight.shape[0]:
            base.embed_tokens.weight[pad] = 0
        self.eval()  # MLX modules start in training mode; like a loaded Transformers model, start in eval

    def output_embedding_shared(self) -> bool:
        """Whether the input embedding doubles as the output projection (then there is no `lm_head`)."""
        return bool(getattr(self.config, "tie_word_embeddings", False))

    @property
    def base_model(self) -> nn.Module:
        """The decoder: under `base_model_prefix` in a head class, the model itself for a bare base model."""
        return self[self.base_model_prefix] if self.base_model_prefix else self

    @property
    def layers(self) -> list[nn.Module]:
        """The decoder layers (the generation contract: one KV cache per entry)."""
        base = self.base_model
        if "layers" not in base:  # still being built: MLX's __setattr__ probes with hasattr
            raise AttributeError("layers")
        return base["layers"]

    def make_cache(self, **options: Any) -> list[KVCache]:
        """Fresh KV caches, one per decoder layer; `options` pick a rotating or quantized one (cache.make_cache)."""
        return make_cache(len(self.layers), **options)

    # ---- loading -------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str | mx.Dtype | None = None,
        config: LlamaConfig | None = None,
        *,
        torch_dtype: Any = None,
        **config_overrides: Any,
    ) -> PreTrainedModel:
        """Load a Transformers (or our converted) directory: `config.json` + safetensors, sharded or not.

        `dtype=None` computes in float32 on the CPU backend (like Transformers; MLX's CPU half-precision
        kernels are slow) unless that would not fit in memory, and keeps the stored dtype on a GPU.
        `dtype="auto"` takes config.json's dtype (else the stored one); `torch_dtype` is its old name.
        Quantized checkpoints get quantized layers; on the CPU their scales and biases become float32,
        which MLX's CPU quantized matmul runs far faster. Transformers' device/quantization options raise
        an error saying what to do instead; none of them reaches the config.
        """
        path = Path(path)
        requested = requested_dtype(dtype, torch_dtype)
        pop_load_options(config_overrides)
        if not path.is_dir():
            raise CheckpointError(f"{path}: not a model directory (expected config.json and *.safetensors)")
        if config is None:
            config = cls.config_class.from_pretrained(path, **config_overrides)
        weights = load_safetensors(path)
        check_layer_count(weights, config.num_hidden_layers, str(path))  # before building any layer
        model = cls(config)
        if requested == "auto":
            requested = auto_dtype(config, weights)
        target = model._compute_dtype(weights, requested)
        if target == mx.float32:  # on the CPU: read straight into the layout its BLAS reads fastest
            read_linear_weights(path, weights, config.tie_word_embeddings)
        weights = model.sanitize(weights)
        if config.quantization:
            q = config.quantization
            if not any(k.endswith(".scales") for k in weights):
                raise CheckpointError(
                    f"{path}: config.json has a `quantization` block, but no tensor has .scales; "
                    "the weights are not quantized"
                )
            scaled = {k for k in weights if k.endswith(".scales")}
            quantize_model(
                model, q["group_size"], q["bits"], lambda p, m: f"{p}.scales" in scaled, cpu=is_cpu_backend()
            )
        weights = {k: _to_compute_dtype(k, v, target) for k, v in weights.items()}
        model.load_checked(weights, str(path))
        if target is not None:
            model.config.torch_dtype = dtype_name(target)
        mx.eval(model.parameters())
        del weights  # so that each re-laid-out weight's old buffer is freed (and reused) as the next one is made
        use_input_major_layout(model)  # float32 on the CPU backend: the layout its BLAS reads fastest
        model.eval()
        model.generation_config = GenerationConfig.for_checkpoint(path, model.config)
        return model

    def _compute_dtype(self, weights: dict[str, mx.array], requested: mx.Dtype | None) -> mx.Dtype | None:
        if requested is not None:
            return requested
        if not is_cpu_backend():
            return None
        float_bytes = sum(v.size for k, v in weights.items() if mx.issubdtype(v.dtype, mx.floating))
        total = _total_memory()
        if total and float_bytes * 4 > 0.75 * total:
            print(
                f"[mlx-llama] keeping the stored dtype: float32 weights would need {float_bytes * 4 / 1e9:.1f} GB",
                file=sys.stderr,
            )
            return None
        return mx.float32

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Map a checkpoint's names onto this class: drop rope buffers, fix the base prefix, adapt heads."""
        weights = {k: v for k, v in weights.items() if not k.endswith("rotary_emb.inv_freq")}
        prefix = self.base_model_prefix
        if not prefix:  # a bare base model: take the decoder out of any head checkpoint
            for head_prefix in ("model.", "transformer."):
                if any(k.startswith(head_prefix) for k in weights):
                    weights = {k.removeprefix(head_prefix): v for k, v in weights.items()}
            prefix = "model"
        other = "transformer" if prefix == "model" else "model"
        if not any(k.startswith(prefix + ".") for k in weights) and any(k.startswith(other + ".") for k in weights):
            weights = {(prefix + k[len(other) :] if k.startswith(other + ".") else k): v for k, v in weights.items()}
        if self.output_embedding_shared():
            weights.pop("lm_head.weight", None)
        own = {name.split(".")[0] for name, _ in tree_flatten(self.parameters())}
        foreign = sorted(k for k in weights if k.split(".")[0] in HEAD_NAMES and k.split(".")[0] not in own)
        if foreign:
            warnings.warn(f"ignoring tensors of another task head: {', '.join(foreign)}", stacklevel=3)
            weights = {k: v for k, v in weights.items() if k not in foreign}
        return weights

    def load_checked(self, weights: dict[str, mx.array], source: str) -> None:
        """Load with errors that name the tensor; a missing task head keeps its fresh initialisation."""
        self.check_weights(weights, source)
        self.load_weights(list(weights.items()), strict=False)

    def check_weights(self, weights: dict[str, Any], source: str) -> None:
        """CheckpointError naming the tensor unless `weights` (anything with `.shape`) fit this model."""
        expected = dict(tree_flatten(self.parameters()))
        unexpected = sorted(set(weights) - set(expected))
        if unexpected:
            raise CheckpointError(
                f"{source}: unexpected tensor(s) {', '.join(unexpected[:5])}"
                f"{' ...' if len(unexpected) > 5 else ''} for {type(self).__name__}"
            )
        missing = sorted(set(expected) - set(weights))
        head_missing = [k for k in missing if k.split(".")[0] in HEAD_NAMES]
        if len(head_missing) < len(missing):
            body = [k for k in missing if k not in head_missing]
            raise CheckpointError(
                f"{source}: missing tensor(s) {', '.join(body[:5])}"
                f"{' ...' if len(body) > 5 else ''} for {type(self).__name__}"
            )
        if head_missing:
            warnings.warn(
                f"{source}: {', '.join(head_missing)} not in the checkpoint; newly initialised "
                "(train the head before use)",
                stacklevel=3,
            )
        for key, value in weights.items():
            dtype = getattr(value, "dtype", None)
            if (
                isinstance(dtype, mx.Dtype)
                and mx.issubdtype(expected[key].dtype, mx.floating)
                and not mx.issubdtype(dtype, mx.floating)
            ):
                raise CheckpointError(f"{source}: tensor {key} is {dtype_name(dtype)}, expected floating point")
            if value.shape != expected[key].shape:
                raise CheckpointError(
                    f"{source}: tensor {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(expected[key].shape)} from config.json"
                )

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.embed_tokens

    def get_output_embeddings(self) -> nn.Module | None:
        """`lm_head`, or None when there is none (a tied model's output is the input embedding)."""
        return self["lm_head"] if "lm_head" in self else None

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Module:
        """Transformers' resize (new rows at the old rows' mean); see `modeling/resize.py`."""
        from .resize import resize_token_embeddings

        return resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of, mean_resizing)

    # ---- saving --------------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> None:
        """Write config.json and model.safetensors (or shards + index) readable by Transformers and by us."""
        path = Path(path)
        weights = unfuse_weights(dict(tree_flatten(self.parameters())), self.config)
        floats = [v.dtype for k, v in weights.items() if mx.issubdtype(v.dtype, mx.floating) and "scales" not in k]
        self.config.architectures = [type(self).__name__]
        if floats:
            self.config.torch_dtype = dtype_name(floats[0])
        self.config.save_pretrained(path)
        if "CausalLM" in type(self).__name__:  # as Transformers: only generative models get one
            self.generation_config.save_pretrained(path)
        save_safetensors(path, weights, max_shard_size)

    def load_adapter(self, adapter_path: str | Path) -> Any:
        """Apply a PEFT-format LoRA/DoRA adapter directory in place (as Transformers' PEFT integration)."""
        from ..lora.adapter_io import load_adapter  # deferred: mlx_llama.lora builds on the models

        return load_adapter(self, adapter_path)

    def generate(self, *args: Any, **kwargs: Any) -> mx.array:
        """Transformers-style `generate` (prompt + new ids); implemented in `mlx_llama.generation`."""
        from ..generation.api import model_generate  # deferred: generation builds on the models

        return model_generate(self, *args, **kwargs)  # resolve_options merges self.generation_config


def _to_compute_dtype(key: str, value: mx.array, target: mx.Dtype | None) -> mx.array:
    """Cast floating tensors to the compute dtype; packed quantized weights (integers) stay as they are."""
    if target is None or not mx.issubdtype(value.dtype, mx.floating) or value.dtype == target:
        return value
    return value.astype(target)
