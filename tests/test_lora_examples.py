"""The LoRA examples on the demo model, run as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_style_example_learns_the_style(tmp_path):
    out = run_example("lora_style.py", "--iters", "40", "--out", str(tmp_path))
    first, last = map(float, re.search(r"validation loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert last < first / 2
    assert "I do declare" not in re.search(r"^before: (.*)$", out, re.M).group(1)
    after = re.findall(r"^after : (.*)$", out, re.M)
    assert len(after) == 4 and sum(a.startswith("Oh, the ") and "I do" in a for a in after) >= 3
    fused = re.search(r"^fused : (.*)$", out, re.M).group(1)
    assert fused == after[0]  # the fused model generates what base + adapter generates
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_sentiment_example_classifies_held_out_sentences(tmp_path):
    out = run_example("lora_sentiment.py", "--out", str(tmp_path))
    first, last = map(float, re.search(r"validation loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert last < first / 2
    correct, total = map(int, re.search(r"held-out accuracy (\d+)/(\d+)", out).groups())
    assert correct >= total - 1
