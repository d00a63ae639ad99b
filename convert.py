"""`python convert.py SOURCE OUTPUT [options]`: the same as `mlx-llama convert` (see mlx_llama/convert.py)."""

import sys

from mlx_llama.convert import main

if __name__ == "__main__":
    sys.exit(main())
