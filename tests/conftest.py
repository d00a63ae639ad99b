"""Import mlx_llama before any test module imports mlx.core: its BLAS set-up must precede MLX's loading."""

import mlx_llama  # noqa: F401
