"""The package version, written once (pyproject.toml) and read from the installed distribution's metadata."""

from __future__ import annotations

import re
from pathlib import Path

DISTRIBUTION = "mlx-llama"


def version() -> str:
    """The installed version; in a source checkout that is not installed, the one pyproject.toml declares."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
    except OSError:
        found = None
    return found.group(1) if found else "0+unknown"
