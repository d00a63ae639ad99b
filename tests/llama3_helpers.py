"""Re-export shim: moved to tests/support/llama3.py (import from there)."""

from support.llama3 import *  # noqa: F401,F403
