"""Re-export shim: moved to tests/support/lora.py (import from there)."""

from support.lora import PAD, TASKS, outputs, peft_model, save_base, token_ids  # noqa: F401
