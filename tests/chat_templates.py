"""Re-export shim: moved to tests/support/chat_templates.py (import from there)."""

from support.chat_templates import *  # noqa: F401,F403
