"""Project habits that packaging tools read: one version (pyproject.toml), the license pyproject declares."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import mlx_llama

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def test_version_is_the_one_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert mlx_llama.__version__ == project["version"]
    assert "__version__ =" not in (ROOT / "mlx_llama" / "__init__.py").read_text()  # not written a second time


def test_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "LICENSE").read_text()
    assert project["license"] == {"text": "MIT"}
    assert text.startswith("MIT License") and "mlx-llama contributors" in text


def test_missing_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        mlx_llama.no_such_name  # noqa: B018


def test_convert_is_the_module_and_convert_checkpoint_the_function():
    import types

    import mlx_llama.convert

    assert isinstance(mlx_llama.convert, types.ModuleType)
    assert mlx_llama.convert_checkpoint is mlx_llama.convert.convert
    assert "convert_checkpoint" in mlx_llama.__all__ and "convert" not in mlx_llama.__all__
