"""Re-export shim: the builders moved to tests/support/ (import from there)."""

from support.compare import rel_err, to_np  # noqa: F401
from support.hf_llama import TINY, hf_config, hf_model  # noqa: F401
