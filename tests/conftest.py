"""Session fixtures shared by the test files; builders live in tests/support/.

Import mlx_llama before any test module imports mlx.core: its BLAS set-up must precede MLX's loading.
"""

from __future__ import annotations

import pytest

import mlx_llama  # noqa: F401  (first: see above)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(path, Transformers model): the generation preset saved with a trained tokenizer. Read-only: copy it first
    to change a file."""
    from support.checkpoints import write_checkpoint

    path = tmp_path_factory.mktemp("tiny_checkpoint")
    return path, write_checkpoint(path)
