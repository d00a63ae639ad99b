"""mlx-llama: the LLaMA family on Apple MLX with the Transformers API."""

from . import _backend

_backend.setup()  # before any matmul: on Linux, point mlx[cpu] at an optimized BLAS

from .cache import KVCache, make_cache  # noqa: E402
from .config import LlamaConfig  # noqa: E402
from .errors import CheckpointError, ConfigError, ConversionError, MlxLlamaError, TokenizerError  # noqa: E402
from .modeling import (  # noqa: E402
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    OpenLlamaForCausalLM,
    OpenLlamaForSequenceClassification,
    OpenLlamaModel,
)
from .open_llama_config import OpenLlamaConfig  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConversionError",
    "KVCache",
    "LlamaConfig",
    "LlamaForCausalLM",
    "LlamaForQuestionAnswering",
    "LlamaForSequenceClassification",
    "LlamaForTokenClassification",
    "LlamaModel",
    "MlxLlamaError",
    "OpenLlamaConfig",
    "OpenLlamaForCausalLM",
    "OpenLlamaForSequenceClassification",
    "OpenLlamaModel",
    "TokenizerError",
    "make_cache",
]
