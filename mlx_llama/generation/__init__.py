"""Text generation: samplers, the decode loop, and the public `generate` / `stream_generate` API."""

from .api import GenerationResponse, generate, model_generate, stream_generate
from .sampling import SamplingParams, TokenChooser

__all__ = [
    "GenerationResponse",
    "SamplingParams",
    "TokenChooser",
    "generate",
    "model_generate",
    "stream_generate",
]
