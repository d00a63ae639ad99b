"""mlx-llama: the LLaMA family on Apple MLX with the Transformers API."""

from . import _backend

_backend.setup()  # before any matmul: on Linux, point mlx[cpu] at an optimized BLAS

from .cache import KVCache, make_cache  # noqa: E402
from .config import LlamaConfig  # noqa: E402
from .convert import convert  # noqa: E402  (the function; the module stays importable as mlx_llama.convert)
from .detokenizer import StreamingDetokenizer  # noqa: E402
from .errors import CheckpointError, ConfigError, ConversionError, MlxLlamaError, TokenizerError  # noqa: E402
from .generation import GenerationResponse, generate, stream_generate  # noqa: E402
from .loading import DEMO_MODEL, load  # noqa: E402
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
from .server import serve  # noqa: E402
from .tokenizer import LlamaTokenizer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DEMO_MODEL",
    "ConfigError",
    "ConversionError",
    "GenerationResponse",
    "KVCache",
    "LlamaConfig",
    "LlamaForCausalLM",
    "LlamaForQuestionAnswering",
    "LlamaForSequenceClassification",
    "LlamaForTokenClassification",
    "LlamaModel",
    "LlamaTokenizer",
    "MlxLlamaError",
    "OpenLlamaConfig",
    "OpenLlamaForCausalLM",
    "OpenLlamaForSequenceClassification",
    "OpenLlamaModel",
    "StreamingDetokenizer",
    "TokenizerError",
    "convert",
    "generate",
    "load",
    "make_cache",
    "serve",
    "stream_generate",
]
