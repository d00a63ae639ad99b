"""Tokenizers with the Transformers API: `LlamaTokenizer` (SentencePiece), plus streaming detokenizers and
Jinja chat templates.

Modules: `slow` (SentencePiece), `base` (what tokenizers share: special tokens, padding, truncation, batching),
`added` (added tokens), `files` (reading a tokenizer directory), `spm_stream` (streaming detokenizer),
`chat` (chat templates).
"""

from .added import AddedToken, BatchEncoding
from .chat import ChatTemplateError, render_plain
from .files import CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_FILE, VOCAB_FILE
from .slow import SPIECE_UNDERLINE, LlamaTokenizer
from .spm_stream import StreamingDetokenizer

__all__ = [
    "CONFIG_FILE",
    "SPECIAL_TOKENS_MAP_FILE",
    "SPIECE_UNDERLINE",
    "TOKENIZER_FILE",
    "VOCAB_FILE",
    "AddedToken",
    "BatchEncoding",
    "ChatTemplateError",
    "LlamaTokenizer",
    "StreamingDetokenizer",
    "render_plain",
]
