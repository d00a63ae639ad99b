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
from .convert import convert  # noqa: E402  (the function; the module stays importable as mlx_llama.convert)
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
from .pipelines import pipeline  # noqa: E402
from .tokenizer import (  # noqa: E402
    LlamaTokenizer,
    LlamaTokenizerFast,
    PreTrainedTokenizerFast,
    StreamingDetokenizer,
)

__version__ = "0.1.0"

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
    "convert",
    "generate",
    "load",
    "make_cache",
    "stream_generate",
]
