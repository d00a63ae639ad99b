"""The JSON recognizer behind `response_format`, checked against Python's json module as the oracle."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_llama.server.json_constraint import ANY, JsonRecognizer, SchemaError, closing_text, compile_schema

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
ANY_JSON = JsonRecognizer(ANY)


def accepts(recognizer: JsonRecognizer, text: str) -> bool:
    state = recognizer.feed(recognizer.start(), text)
    return state is not None and recognizer.is_complete(state)


@settings(max_examples=150, deadline=None)
@given(values, st.sampled_from([(",", ":"), (", ", ": ")]), st.booleans())
def test_every_serialised_value_is_accepted(value, separators, ascii_only):
    text = json.dumps(value, separators=separators, ensure_ascii=ascii_only)
    assert accepts(ANY_JSON, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.-+eEtrufalsn \\abc', max_size=14))
def test_accepts_exactly_what_json_loads_accepts(text):
    try:
        json.loads(text)
        # our two limits: no whitespace runs (or trailing blanks) outside strings, numbers under 24 characters
        valid = "  " not in text and not text.endswith(" ") and len(text) < 24
    except json.JSONDecodeError:
        valid = False
    if valid:
        assert accepts(ANY_JSON, text)
    elif accepts(ANY_JSON, text):  # accepted text must parse
        json.loads(text)


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_any_accepted_prefix_closes_into_valid_json(value, data):
    text = json.dumps(value)
    cut = data.draw(st.integers(0, len(text)))
    state = ANY_JSON.feed(ANY_JSON.start(), text[:cut])
    assert state is not None
    json.loads(text[:cut] + closing_text(state))


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["x", "y"]}},
        "score": {"type": ["number", "null"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "text,ok",
    [
        ('{"name": "a", "age": 3}', True),
        ('{"age":3,"name":"b","tags":["x","y"],"score":null}', True),
        ('{"name":"a","age":3,"score":-1.5e3}', True),
        ('{"name":"a"}', False),  # a required key missing
        ('{"name":"a","age":3.5}', False),  # not an integer
        ('{"name":"a","age":3,"tags":["z"]}', False),  # not in the enum
        ('{"name":"a","age":3,"other":1}', False),  # no additional properties
        ('{"name":"a","name":"b","age":1}', False),  # a key twice
        ('["name"]', False),
    ],
)
def test_schema_subset(text, ok):
    assert accepts(JsonRecognizer(compile_schema(SCHEMA)), text) is ok


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {"name": st.text(max_size=6), "age": st.integers(-999, 999)},
        optional={"tags": st.lists(st.sampled_from(["x", "y"]), max_size=3)},
    ),
    st.data(),
)
def test_schema_prefixes_close_into_matching_documents(doc, data):
    recognizer = JsonRecognizer(compile_schema(SCHEMA))
    text = json.dumps(doc)
    assert accepts(recognizer, text)
    cut = data.draw(st.integers(0, len(text)))
    state = recognizer.feed(recognizer.start(), text[:cut])
    closed = json.loads(text[:cut] + closing_text(state))
    assert {"name", "age"} <= set(closed) <= set(SCHEMA["properties"])
    assert isinstance(closed["age"], int) and isinstance(closed["name"], str)


@pytest.mark.parametrize(
    "schema,word",
    [
        ({"type": "string", "pattern": "a+"}, "pattern"),
        ({"anyOf": [{"type": "string"}]}, "anyOf"),
        ({"type": "object", "properties": {"a": {}}, "additionalProperties": True}, "additionalProperties"),
        ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "required"),
        ({"type": "decimal"}, "decimal"),
    ],
)
def test_unsupported_schemas_are_refused_by_name(schema, word):
    with pytest.raises(SchemaError, match=word):
        compile_schema(schema)
