"""Re-export shim: moved to tests/support/server.py (import from there)."""

from support.server import ServerProcess, tiny_long_context_model  # noqa: F401
