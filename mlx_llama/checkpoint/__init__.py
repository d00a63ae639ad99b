"""Bytes on disk <-> arrays: safetensors, torch pickles, the Meta layout, the Hub."""
