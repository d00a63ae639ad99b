"""Resolve a checkpoint source: a local directory, or a Hugging Face Hub repo id fetched with huggingface_hub.

Only the files a conversion reads are fetched (configs, tokenizer, safetensors; torch `.bin` or Meta `.pth`
only when the repo has no safetensors). huggingface_hub's own cache is used, so a repo already downloaded
converts offline (HF_HUB_OFFLINE=1, or no network: the cached snapshot is used).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CheckpointError

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_FIRST = ["*.json", "tokenizer.model", "*.safetensors"]


def looks_like_repo_id(source: str) -> bool:
    """'owner/name' (not an absolute or ./relative path)."""
    return bool(_REPO_ID.fullmatch(source)) and ".." not in source


def resolve_source(
    source: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local path as is; a Hub id downloaded (or found in the cache) into a snapshot directory."""
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            raise CheckpointError(f"{source}: --revision applies to Hub repo ids, not to a local directory")
        return path
    if not looks_like_repo_id(str(source)):
        raise CheckpointError(f"{source}: no such file or directory")
    return fetch(str(source), revision, cache_dir, local_files_only)


def fetch(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Download the files a conversion needs; weights in torch/Meta pickles only when there are no safetensors."""
    from huggingface_hub import constants

    if local_files_only is None:
        local_files_only = bool(constants.HF_HUB_OFFLINE)
    folder = _snapshot(repo_id, revision, cache_dir, local_files_only, _FIRST)
    if any(folder.glob("*.safetensors")):
        return folder
    if (folder / "config.json").is_file():
        folder = _snapshot(repo_id, revision, cache_dir, local_files_only, ["pytorch_model*.bin"])
    elif (folder / "params.json").is_file():
        folder = _snapshot(repo_id, revision, cache_dir, local_files_only, ["consolidated.*.pth"])
    return folder


def _snapshot(repo_id: str, revision, cache_dir, local_files_only: bool, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=patterns,
            )
        )
    except RevisionNotFoundError:
        raise CheckpointError(f"{where}: no such revision on the Hub") from None
    except GatedRepoError:
        raise CheckpointError(f"{where}: gated repo; accept its licence and log in (huggingface-cli login)") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{where}: no such local directory nor Hub repo (or it is private)") from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{where}: not a local directory, and not in the Hugging Face cache while offline "
            "(unset HF_HUB_OFFLINE or download it first)"
        ) from None
    except HFValidationError as exc:
        raise CheckpointError(f"{where}: not a valid Hub repo id ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{where}: download failed ({exc})") from None
