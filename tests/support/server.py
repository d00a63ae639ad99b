"""Start `mlx-llama serve` as a real subprocess on a free loopback port, and stop it with a signal."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 90
SHUTDOWN_TIMEOUT_S = 15
REQUEST_TIMEOUT_S = 60
URL = re.compile(r"on (http://127\.0\.0\.1:\d+)/v1")


class ServerProcess:
    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "mlx_llama", "serve", "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        found: queue.Queue[str] = queue.Queue()

        def drain() -> None:  # keep reading so the pipe never fills
            for line in self.proc.stderr:
                self.lines.append(line)
                match = URL.search(line)
                if match:
                    found.put(match.group(1))
            found.put("")

        threading.Thread(target=drain, daemon=True).start()
        try:
            self.base = found.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            self.base = ""
        if not self.base:
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        self.v1 = self.base + "/v1"

    def client(self, api_key: str = "none", **kw):
        import openai

        return openai.OpenAI(base_url=self.v1, api_key=api_key, timeout=REQUEST_TIMEOUT_S, max_retries=0, **kw)

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=REQUEST_TIMEOUT_S, **kw)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and return its exit status (killing it if it overstays)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return -999

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def tiny_long_context_model(directory: Path) -> Path:
    """A random 2-layer Llama (hidden 64) with a 4,096-token context and the demo model's tokenizer."""
    from mlx_llama import DEMO_MODEL, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=2000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(DEMO_MODEL / name, directory / name)
    return directory
