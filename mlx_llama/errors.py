"""One family of errors for everything a user can cause, so the CLI can print a message instead of a traceback."""


class MlxLlamaError(Exception):
    """Base class: the message names the file, tensor or field at fault and what was expected."""


class ConfigError(MlxLlamaError, ValueError):
    """An invalid or missing configuration value (also a ValueError, as Transformers raises)."""


class CheckpointError(MlxLlamaError):
    """A checkpoint file is missing, corrupt, or does not match the model."""


class TokenizerError(MlxLlamaError):
    """A tokenizer file is missing or corrupt, or an id is out of range."""


class ConversionError(MlxLlamaError):
    """Conversion cannot proceed (bad source layout, overflow in a cast, existing output)."""


class InputError(ConfigError):
    """A bad argument to a model or generation call (token ids out of range, wrong shapes or types); a
    ConfigError (and so a ValueError) as the generation API raised before it existed."""


def shorten(value: object, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters, so that a hostile file's value is never echoed at length."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<a {type(value).__name__} nested too deeply to print>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
