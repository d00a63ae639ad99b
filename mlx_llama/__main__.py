"""`python -m mlx_llama ...` is the `mlx-llama` command."""

import sys

from .cli import main

sys.exit(main())
