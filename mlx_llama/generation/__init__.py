"""Text generation: samplers, the decode loop, and the public `generate` / `stream_generate` API."""

from .api import GenerationResponse, generate, model_generate, stream_generate
from .config import GenerationConfig
from .sampling import SamplingParams, TokenChooser

__all__ = [
    "GenerationConfig",
    "GenerationResponse",
    "SamplingParams",
    "TokenChooser",
    "generate",
    "model_generate",
    "stream_generate",
]
