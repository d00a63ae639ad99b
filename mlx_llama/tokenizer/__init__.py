"""Tokenizers with the Transformers API: `LlamaTokenizer` (SentencePiece), `LlamaTokenizerFast` and
`PreTrainedTokenizerFast` (tokenizer.json), `AutoTokenizer`, streaming detokenizers and Jinja chat templates.

Modules: `slow` (SentencePiece), `fast` (tokenizers library), `auto` (choosing one), `base` (what they share:
special tokens, padding, truncation, batching), `added` (added tokens), `files` (reading a tokenizer
directory), `spm_stream` / `bpe_stream` (streaming detokenizers), `spm_convert` (from_slow), `chat` (chat
templates).
"""

from .added import AddedToken, BatchEncoding
from .auto import AutoTokenizer, tokenizer_class_for
from .chat import ChatTemplateError, render_plain
from .fast import LlamaTokenizerFast, PreTrainedTokenizerFast
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
    "AutoTokenizer",
    "BatchEncoding",
    "ChatTemplateError",
    "LlamaTokenizer",
    "LlamaTokenizerFast",
    "PreTrainedTokenizerFast",
    "StreamingDetokenizer",
    "render_plain",
    "tokenizer_class_for",
]
