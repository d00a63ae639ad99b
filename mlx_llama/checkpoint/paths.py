"""Every file a checkpoint names must lie inside the checkpoint's directory: no `..`, no absolute paths,
no symlink out of it (except into the Hugging Face cache's blob store, where snapshot links point)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import CheckpointError, shorten


def _allowed_roots(directory: Path) -> list[Path]:
    real = directory.resolve()
    roots = [real]
    # huggingface_hub snapshots: <repo>/snapshots/<rev>/<file> -> <repo>/blobs/<hash>
    if directory.absolute().parent.name == "snapshots":
        roots.append(directory.absolute().parent.parent.resolve() / "blobs")
    return roots


def inside(directory: str | Path, name: object, what: str) -> Path:
    """`directory / name`, refused (CheckpointError naming `what`) unless it stays inside `directory`."""
    directory = Path(directory)
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(f"{what}: file name {shorten(name)} is not a non-empty string")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        raise CheckpointError(f"{what}: file name {shorten(name)} points outside {directory}; refusing it")
    path = directory / name
    if path.exists() or path.is_symlink():
        real = path.resolve()
        if not any(real == root or root in real.parents for root in _allowed_roots(directory)):
            raise CheckpointError(f"{what}: {name} is a link to {real}, outside {directory}; refusing it")
    return path
