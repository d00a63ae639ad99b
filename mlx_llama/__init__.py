"""mlx-llama: the LLaMA family on Apple MLX with the Transformers API."""

from . import _backend

_backend.setup()  # before any matmul: on Linux, point mlx[cpu] at an optimized BLAS

from .auto import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from .cache import KVCache, make_cache  # noqa: E402
from .config import LlamaConfig  # noqa: E402
from .convert import convert as convert_checkpoint  # noqa: E402  (mlx_llama.convert stays the module)
from .errors import CheckpointError, ConfigError, ConversionError, MlxLlamaError, TokenizerError  # noqa: E402
from .generation import GenerationConfig, GenerationResponse, generate, stream_generate  # noqa: E402
from .generation.streamers import TextIteratorStreamer, TextStreamer  # noqa: E402
from .loading import DEMO_MODEL, load  # noqa: E402
from .mask_visualizer import AttentionMaskVisualizer  # noqa: E402
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
from .perplexity import perplexity  # noqa: E402  (the function; the module stays importable)
from .pipelines import pipeline  # noqa: E402
from .server import serve  # noqa: E402
from .tokenizer import (  # noqa: E402
    LlamaTokenizer,
    LlamaTokenizerFast,
    PreTrainedTokenizerFast,
    StreamingDetokenizer,
)

__all__ = [
    "AttentionMaskVisualizer",
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoTokenizer",
    "LlamaTokenizerFast",
    "PreTrainedTokenizerFast",
    "TextIteratorStreamer",
    "TextStreamer",
    "pipeline",
    "CheckpointError",
    "DEMO_MODEL",
    "ConfigError",
    "ConversionError",
    "GenerationConfig",
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
    "convert_checkpoint",
    "generate",
    "load",
    "make_cache",
    "perplexity",
    "serve",
    "stream_generate",
]


def __getattr__(name: str):
    """`__version__` is read on first use (importlib.metadata costs import time)."""
    if name == "__version__":
        from ._version import version

        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
