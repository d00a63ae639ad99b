"""Re-export shim: the builders moved to tests/support/ (import from there)."""

from support.compare import rel_err  # noqa: F401
from support.hf_llama import FFN, HEADS, HIDDEN, LAYERS, MULTIPLE_OF, hf_llama  # noqa: F401
from support.hf_llama import hf_logits as logits  # noqa: F401
from support.meta import _to_meta_qk, train_tokenizer, write_meta  # noqa: F401
