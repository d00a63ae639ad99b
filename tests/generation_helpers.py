"""Re-export shim: the builders moved to tests/support/ (import from there)."""

from support.checkpoints import WORDS, corpus, train_tokenizer, write_checkpoint  # noqa: F401
from support.hf_llama import hf_tiny_model  # noqa: F401
