"""Constrained decoding for `response_format`: a character-level JSON recognizer driven by a schema subset.

The recognizer is a pushdown automaton whose state is an immutable tuple, so trying a candidate token is
cheap: feed its characters to the current state and keep the result only if every character was accepted.
Accepted text is always a prefix of a valid JSON document (matching the schema); `is_complete` says when it
is a whole one. Outside strings at most one whitespace character is allowed in a row (none after the
document), so a model cannot stall in an endless run of blanks.

Supported schema subset (anything else is refused with a 400 naming the keyword): `type` (one name or a
list of them: object, array, string, number, integer, boolean, null), `properties` (only the listed keys
may appear; each at most once), `required`, `additionalProperties` false (or absent: no other keys),
`items`, `enum`, `const`, and the annotations `title`, `description`, `$schema`, `default`, `examples`.
"""

from __future__ import annotations

import json
from typing import Any

WS = " \t\n\r"
HEX = "0123456789abcdefABCDEF"
DIGITS = "0123456789"
MAX_NUMBER_CHARS = 24
ANNOTATIONS = {"title", "description", "$schema", "default", "examples", "$id", "$comment"}
SCHEMA_KEYS = ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "items", "enum", "const"}
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")

ANY = {"kind": "any"}
ANY_OBJECT = {"kind": "object", "props": None, "required": frozenset()}


class SchemaError(ValueError):
    """A schema outside the supported subset; the message names the keyword and its path."""


def _literals(values: list[Any], where: str) -> dict:
    if not isinstance(values, list) or not values:
        raise SchemaError(f"{where}: enum must be a non-empty list")
    return {"kind": "lit", "options": tuple(json.dumps(v, ensure_ascii=False) for v in values)}


def _typed(name: str, schema: dict, where: str) -> dict:
    if name == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties", False if props is not None else True)
        if props is None:
            if extra is not True and extra != {}:
                raise SchemaError(f"{where}: additionalProperties without properties is not supported")
            return ANY_OBJECT
        if not isinstance(props, dict):
            raise SchemaError(f"{where}.properties must be an object")
        if extra is not False:
            raise SchemaError(f"{where}: additionalProperties must be false (or absent) when properties are given")
        required = schema.get("required", [])
        if not isinstance(required, list) or any(r not in props for r in required):
            raise SchemaError(f"{where}.required must list names from properties")
        compiled = {k: compile_schema(v, f"{where}.properties.{k}") for k, v in props.items()}
        return {"kind": "object", "props": compiled, "required": frozenset(required)}
    if name == "array":
        items = schema.get("items")
        return {"kind": "array", "items": ANY if items is None else compile_schema(items, f"{where}.items")}
    if name == "string":
        return {"kind": "string"}
    if name in ("number", "integer"):
        return {"kind": "number", "integer": name == "integer"}
    if name == "boolean":
        return {"kind": "lit", "options": ("true", "false")}
    if name == "null":
        return {"kind": "lit", "options": ("null",)}
    raise SchemaError(f"{where}.type: unknown type {name!r}; expected one of {', '.join(TYPES)}")


def compile_schema(schema: Any, where: str = "schema") -> dict:
    """Turn a JSON schema (the supported subset) into the recognizer's node tree; SchemaError otherwise."""
    if schema is True or schema == {}:
        return ANY
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be an object")
    unknown = sorted(set(schema) - SCHEMA_KEYS)
    if unknown:
        supported = ", ".join(sorted(SCHEMA_KEYS))
        raise SchemaError(f"{where}: keyword {unknown[0]!r} is not supported (supported: {supported})")
    if "const" in schema:
        return _literals([schema["const"]], where)
    if "enum" in schema:
        return _literals(schema["enum"], where)
    kind = schema.get("type")
    if kind is None:
        if "properties" in schema:
            return _typed("object", schema, where)
        if "items" in schema:
            return _typed("array", schema, where)
        return ANY
    names = kind if isinstance(kind, list) else [kind]
    if not names or not all(isinstance(n, str) for n in names):
        raise SchemaError(f"{where}.type must be a type name or a list of them")
    options = [_typed(n, schema, where) for n in names if not (n == "integer" and "number" in names)]
    return options[0] if len(options) == 1 else {"kind": "union", "options": options}


# ---- the automaton ------------------------------------------------------------------------------------------
# Frames: ("top", node, phase) ("obj", node, phase, used, key) ("arr", items, phase) ("str", mode)
# ("lit", options, pos) ("num", integer, phase, length). A step returns (action, payload) or None (rejected):
# "c" continue with payload as the new frame, "p" replace with payload[0] and push payload[1], "w" whitespace,
# "d" done (char consumed), "r" done (char not consumed: feed it to the parent).


def _start(node: dict, ch: str):
    """The frame of a value of `node` whose first character is ch, or None."""
    kind = node["kind"]
    if kind == "union":
        for option in node["options"]:
            frame = _start(option, ch)
            if frame is not None:
                return frame
        return None
    if kind == "any":
        if ch == "{":
            return ("obj", ANY_OBJECT, "open", frozenset(), None)
        if ch == "[":
            return ("arr", ANY, "open")
        if ch == '"':
            return ("str", 0)
        if ch == "-" or ch in DIGITS:
            return _num_start(False, ch)
        return _start({"kind": "lit", "options": ("true", "false", "null")}, ch)
    if kind == "object":
        return ("obj", node, "open", frozenset(), None) if ch == "{" else None
    if kind == "array":
        return ("arr", node["items"], "open") if ch == "[" else None
    if kind == "string":
        return ("str", 0) if ch == '"' else None
    if kind == "number":
        return _num_start(node["integer"], ch)
    options = tuple(o for o in node["options"] if o[0] == ch)
    return ("lit", options, 1) if options else None


def _num_start(integer: bool, ch: str):
    if ch == "-":
        return ("num", integer, "sign", 1)
    if ch == "0":
        return ("num", integer, "zero", 1)
    if ch in DIGITS:
        return ("num", integer, "int", 1)
    return None


_NUM_NEXT = {  # phase -> {char class: next phase}; "." and "e" only for non-integers
    "sign": {"0": "zero", "d": "int"},
    "zero": {".": "dot", "e": "e"},
    "int": {"0": "int", "d": "int", ".": "dot", "e": "e"},
    "dot": {"0": "frac", "d": "frac"},
    "frac": {"0": "frac", "d": "frac", "e": "e"},
    "e": {"+": "esign", "0": "exp", "d": "exp"},
    "esign": {"0": "exp", "d": "exp"},
    "exp": {"0": "exp", "d": "exp"},
}
_NUM_COMPLETE = {"zero", "int", "frac", "exp"}


def _num_step(frame, ch):
    _, integer, phase, length = frame
    cls = "0" if ch == "0" else "d" if ch in DIGITS else "e" if ch in "eE" else "+" if ch in "+-" else ch
    nxt = _NUM_NEXT[phase].get(cls)
    if integer and cls in ".e":
        nxt = None
    if nxt is not None and length < MAX_NUMBER_CHARS:
        return "c", ("num", integer, nxt, length + 1)
    return ("r", frame) if phase in _NUM_COMPLETE else None


def _str_step(frame, ch):
    mode = frame[1]
    if mode == 0:
        if ch == '"':
            return "d", frame
        if ch == "\\":
            return "c", ("str", 1)
        return None if ord(ch) < 0x20 else ("c", frame)
    if mode == 1:
        if ch in '"\\/bfnrt':
            return "c", ("str", 0)
        return ("c", ("str", 5)) if ch == "u" else None
    return ("c", ("str", 0 if mode == 2 else mode - 1)) if ch in HEX else None


def _lit_step(frame, ch):
    _, options, pos = frame
    cont = tuple(o for o in options if len(o) > pos and o[pos] == ch)
    if cont:
        if all(len(o) == pos + 1 for o in cont):
            return "d", ("lit", cont, pos + 1)
        return "c", ("lit", cont, pos + 1)
    exact = tuple(o for o in options if len(o) == pos)
    return ("r", ("lit", exact, pos)) if exact else None


def _obj_key(node, used):
    """The frame for a key whose opening quote was just read."""
    props = node["props"]
    if props is None:
        return ("str", 0)
    options = tuple(json.dumps(k, ensure_ascii=False) for k in props if k not in used)
    return ("lit", options, 1) if options else None


def _obj_step(frame, ch):
    _, node, phase, used, key = frame
    if ch in WS and phase != "key" and phase != "value":
        return "w", frame
    closable = node["required"] <= used
    if phase in ("open", "need_key") and ch == '"':
        child = _obj_key(node, used)
        return None if child is None else ("p", (("obj", node, "key", used, None), child))
    if phase == "open" and ch == "}" and closable:
        return "d", frame
    if phase == "colon" and ch == ":":
        return "c", ("obj", node, "value_start", used, key)
    if phase == "value_start":
        props = node["props"]
        child = _start(ANY if props is None else props[key], ch)
        return None if child is None else ("p", (("obj", node, "value", used, key), child))
    if phase == "after":
        more = node["props"] is None or any(k not in used for k in node["props"])
        if ch == "," and more:
            return "c", ("obj", node, "need_key", used, None)
        if ch == "}" and closable:
            return "d", frame
    return None


def _arr_step(frame, ch):
    _, items, phase = frame
    if ch in WS and phase != "value":
        return "w", frame
    if phase == "open" and ch == "]":
        return "d", frame
    if phase in ("open", "need_value"):
        child = _start(items, ch)
        return None if child is None else ("p", (("arr", items, "value"), child))
    if phase == "after":
        if ch == ",":
            return "c", ("arr", items, "need_value")
        if ch == "]":
            return "d", frame
    return None


def _top_step(frame, ch):
    _, node, phase = frame
    if phase != "start":
        return None
    if ch in WS:
        return "w", frame
    child = _start(node, ch)
    return None if child is None else ("p", (("top", node, "value"), child))


_STEPS = {"num": _num_step, "str": _str_step, "lit": _lit_step, "obj": _obj_step, "arr": _arr_step, "top": _top_step}


def _child_done(parent, child):
    kind = parent[0]
    if kind == "top":
        return ("top", parent[1], "done")
    if kind == "arr":
        return ("arr", parent[1], "after")
    _, node, phase, used, key = parent
    if phase == "key":
        name = json.loads(child[1][0]) if child[0] == "lit" else None
        return ("obj", node, "colon", used, name)
    return ("obj", node, "after", used | {key} if key is not None else used, None)


class JsonRecognizer:
    """Immutable recognizer states: `start()`, `feed(state, text)` -> state or None, `is_complete(state)`."""

    def __init__(self, node: dict) -> None:
        self.node = node

    def start(self):
        return ((("top", self.node, "start"),), False)

    @staticmethod
    def feed(state, text: str):
        stack, prev_ws = state
        for ch in text:
            while True:
                top = stack[-1]
                result = _STEPS[top[0]](top, ch)
                if result is None:
                    return None
                action, payload = result
                if action == "w":
                    if prev_ws:
                        return None
                    prev_ws = True
                    break
                prev_ws = False
                if action == "c":
                    stack = stack[:-1] + (payload,)
                    break
                if action == "p":
                    stack = stack[:-1] + payload
                    break
                stack = stack[:-2] + (_child_done(stack[-2], payload),)
                if action == "d":
                    break
        return stack, prev_ws

    @staticmethod
    def is_done(state) -> bool:
        """The document is closed: nothing more may follow."""
        stack = state[0]
        return len(stack) == 1 and stack[0][2] == "done"

    def is_complete(self, state) -> bool:
        """The text so far is a whole document (a closed one, or a top-level number/literal that may end here)."""
        if self.is_done(state):
            return True
        stack = state[0]
        if len(stack) != 2:
            return False
        result = _STEPS[stack[1][0]](stack[1], "\x00")
        return result is not None and result[0] == "r"


def recognizer_for(response_format: dict) -> JsonRecognizer:
    """The recognizer for a validated `response_format` of type json_object or json_schema."""
    if response_format["type"] == "json_object":
        return JsonRecognizer(ANY_OBJECT)
    return JsonRecognizer(compile_schema(response_format["json_schema"].get("schema", {})))


# ---- the shortest way to finish: used when the token budget runs out -----------------------------------------


def _min_value(node: dict) -> str:
    kind = node["kind"]
    if kind == "any":
        return "0"
    if kind == "object":
        return "{" + _object_rest(node, frozenset(), first=True) + "}"
    if kind == "array":
        return "[]"
    if kind == "string":
        return '""'
    if kind == "number":
        return "0"
    if kind == "union":
        return min((_min_value(o) for o in node["options"]), key=len)
    return min(node["options"], key=len)


def _object_rest(node: dict, used: frozenset, first: bool) -> str:
    """The required keys still missing, each with its shortest value (without the closing brace)."""
    props = node["props"] or {}
    parts = [
        json.dumps(k, ensure_ascii=False) + ":" + _min_value(props[k])
        for k in props
        if k in node["required"] and k not in used
    ]
    return ("" if first else ",") * bool(parts) + ",".join(parts)


def _frame_close(frame, key_hint) -> tuple[str, str | None]:
    """(text that closes this frame, the key a key frame settles on) given the child's key hint."""
    kind = frame[0]
    if kind == "str":
        mode = frame[1]
        return ('"' if mode == 0 else 'n"' if mode == 1 else "0" * (mode - 1) + '"'), None
    if kind == "lit":
        shortest = min(frame[1], key=len)
        return shortest[frame[2] :], shortest
    if kind == "num":
        return ("" if frame[2] in _NUM_COMPLETE else "0"), None
    if kind == "arr":
        items, phase = frame[1], frame[2]
        return (_min_value(items) if phase == "need_value" else "") + "]", None
    if kind == "top":
        return (_min_value(frame[1]) if frame[2] == "start" else ""), None
    _, node, phase, used, key = frame
    props = node["props"]
    if phase == "key":
        key = json.loads(key_hint) if key_hint and props is not None else None
    value_node = ANY if props is None or key is None else props[key]
    used_after = used | {key} if key is not None else used
    head = {
        "key": ":" + _min_value(value_node),
        "colon": ":" + _min_value(value_node),
        "value_start": _min_value(value_node),
    }.get(phase, "")
    if phase == "need_key":
        missing = [k for k in (props or {}) if k not in used and k in node["required"]]
        name = missing[0] if missing else next((k for k in (props or {}) if k not in used), "")
        head = json.dumps(name) + ":" + _min_value(ANY if props is None else props.get(name, ANY))
        used_after = used | {name}
    first = phase == "open"
    return head + _object_rest(node, used_after, first=first and not head) + "}", None


def closing_text(state) -> str:
    """The shortest text that turns the accepted prefix into a whole document ("" when it is one)."""
    if state is None:
        return ""
    out, hint = [], None
    for frame in reversed(state[0]):
        text, hint = _frame_close(frame, hint)
        out.append(text)
    return "".join(out)
