"""Re-export shim: the corpus moved to tests/support/tokenizer_corpus.py (import from there)."""

from support.tokenizer_corpus import MISTRAL_V1, mistral_model_path, parity_corpus, tiny_model_path  # noqa: F401
