"""`python convert.py SOURCE OUTPUT [options]`: the same as `mlx-llama convert` (see mlx_llama/convert.py)."""

import sys

if __name__ == "__main__":
    try:
        from mlx_llama.convert import main

        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the converter started: nothing was written
        print("error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
