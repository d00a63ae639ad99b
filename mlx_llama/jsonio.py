"""Reading the small JSON files of a checkpoint (config, index, params, tokenizer config) with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError, MlxLlamaError, shorten

MAX_JSON_BYTES = 64 << 20  # config, index, params and tokenizer configs are kilobytes; this bounds a hostile one


def read_json_object(path: str | Path, error: type[MlxLlamaError] = CheckpointError, hint: str = "") -> dict[str, Any]:
    """A JSON object from `path`; a missing file, bad JSON or a non-object raises `error` naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{path}: {path.stat().st_size} bytes, more than the {MAX_JSON_BYTES} a settings file may have")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: missing{'; ' + hint if hint else ''}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{path}: not valid JSON ({shorten(str(exc), 120)})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
