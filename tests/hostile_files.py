"""Re-export shim: moved to tests/support/hostile_files.py (import from there)."""

from support.hostile_files import *  # noqa: F401,F403
