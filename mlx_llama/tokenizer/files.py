"""Reading a tokenizer directory: tokenizer_config.json, special_tokens_map.json, added_tokens.json and the
chat template files, checked field by field so a wrong type is an error naming the field, not a crash later."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import TokenizerError
from ..jsonio import read_json_object
from .added import SPECIAL_ATTRS, AddedToken

VOCAB_FILE = "tokenizer.model"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_JSON = "chat_template.json"
CHAT_TEMPLATE_DIR = "additional_chat_templates"

_BOOL = (bool,)
_OPT_BOOL = (bool, type(None))
_TOKEN = (str, dict, type(None))
# tokenizer_config.json key -> accepted JSON types
CONFIG_FIELDS: dict[str, tuple[type, ...]] = {
    "add_bos_token": _BOOL,
    "add_eos_token": _BOOL,
    "clean_up_tokenization_spaces": _BOOL,
    "use_default_system_prompt": _BOOL,
    "spaces_between_special_tokens": _BOOL,
    "legacy": _OPT_BOOL,
    "add_prefix_space": _OPT_BOOL,
    "sp_model_kwargs": (dict,),
    "padding_side": (str,),
    "truncation_side": (str,),
    "model_max_length": (int, float, type(None)),
    "chat_template": (str, list, type(None)),
    "additional_special_tokens": (list,),
    "bos_token": _TOKEN,
    "eos_token": _TOKEN,
    "unk_token": _TOKEN,
    "pad_token": _TOKEN,
}
_NO_LIMIT = 1e29  # Transformers writes VERY_LARGE_INTEGER for "no limit"


def _type_names(types: tuple[type, ...]) -> str:
    names = {
        bool: "true/false",
        str: "a string",
        dict: "an object",
        list: "a list",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _checked(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The known fields of tokenizer_config.json, each checked against the type Transformers writes."""
    init: dict[str, Any] = {}
    for key, types in CONFIG_FIELDS.items():
        if key not in config:
            continue
        value = config[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise TokenizerError(f"{where}: field {key!r} must be {_type_names(types)}, got {value!r}")
        init[key] = value
    limit = init.get("model_max_length")
    if limit is not None:
        init["model_max_length"] = None if limit > _NO_LIMIT else int(limit)
    if isinstance(init.get("chat_template"), list):
        init["chat_template"] = _named_templates(init["chat_template"], where)
    extra = init.get("additional_special_tokens", [])
    if not all(isinstance(t, (str, dict)) for t in extra):
        raise TokenizerError(f"{where}: field 'additional_special_tokens' must be a list of strings or tokens")
    if "added_tokens_decoder" in config:
        init["added_tokens_decoder"] = _added_decoder(config["added_tokens_decoder"], where)
    return init


def _named_templates(entries: list, where: str) -> dict[str, str]:
    """[{"name": ..., "template": ...}, ...] -> {name: template}."""
    out = {}
    for entry in entries:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "template")):
            raise TokenizerError(f"{where}: field 'chat_template' entries must be {{'name': str, 'template': str}}")
        out[entry["name"]] = entry["template"]
    return out


def _added_decoder(value: Any, where: str) -> dict[int, Any]:
    if not isinstance(value, dict):
        raise TokenizerError(f"{where}: field 'added_tokens_decoder' must be an object of id -> token")
    out = {}
    for key, token in value.items():
        try:
            index = int(key)
        except ValueError:
            raise TokenizerError(f"{where}: field 'added_tokens_decoder' has a non-integer id {key!r}") from None
        if not isinstance(token, (dict, str)):
            raise TokenizerError(f"{where}: field 'added_tokens_decoder' entry {key} must be a token object")
        out[index] = token
    return out


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path}: cannot read the chat template ({exc})") from None


def read_chat_templates(path: str) -> str | dict[str, str] | None:
    """chat_template.jinja (+ additional_chat_templates/*.jinja), else chat_template.json; None if neither."""
    template: str | dict[str, str] | None = None
    json_path = os.path.join(path, CHAT_TEMPLATE_JSON)
    if os.path.isfile(json_path):
        value = read_json_object(json_path, TokenizerError).get("chat_template")
        if isinstance(value, list):
            value = _named_templates(value, json_path)
        if not isinstance(value, (str, dict)):
            raise TokenizerError(f"{json_path}: field 'chat_template' must be a string or a list of named templates")
        template = value
    jinja_path = os.path.join(path, CHAT_TEMPLATE_FILE)
    if os.path.isfile(jinja_path):
        template = _read_text(jinja_path)
    extra_dir = os.path.join(path, CHAT_TEMPLATE_DIR)
    if os.path.isdir(extra_dir):
        named = {"default": template} if isinstance(template, str) else dict(template or {})
        for name in sorted(os.listdir(extra_dir)):
            if name.endswith(".jinja"):
                named[name[: -len(".jinja")]] = _read_text(os.path.join(extra_dir, name))
        template = named
    return template


def read_init_kwargs(path: str) -> dict[str, Any]:
    """The constructor arguments the files in `path` give (tokenizer_config.json first, as Transformers)."""
    if not os.path.isdir(path):
        raise TokenizerError(f"tokenizer directory not found: {path!r}")
    init: dict[str, Any] = {}
    config_path = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(config_path):
        init = _checked(read_json_object(config_path, TokenizerError), config_path)
    map_path = os.path.join(path, SPECIAL_TOKENS_MAP_FILE)
    if os.path.isfile(map_path):
        special_map = read_json_object(map_path, TokenizerError)
        for key, value in special_map.items():
            if key in SPECIAL_ATTRS or key == "additional_special_tokens":
                init.setdefault(key, _checked({key: value}, map_path)[key])
    added_path = os.path.join(path, ADDED_TOKENS_FILE)
    if os.path.isfile(added_path) and "added_tokens_decoder" not in init:
        added = read_json_object(added_path, TokenizerError)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in added.values()):
            raise TokenizerError(f"{added_path}: every value must be an integer id")
        init["added_tokens_decoder"] = {i: AddedToken(c) for c, i in added.items()}
    template = read_chat_templates(path)
    if template is not None:
        init["chat_template"] = template
    return init


def template_for_config(template: str | dict[str, str]) -> str | list[dict[str, str]]:
    """Named templates as tokenizer_config.json stores them: [{"name": ..., "template": ...}, ...]."""
    if isinstance(template, dict):
        return [{"name": name, "template": text} for name, text in template.items()]
    return template


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
