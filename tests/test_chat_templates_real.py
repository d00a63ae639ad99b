"""Real chat templates rendered by mlx_llama's Jinja sandbox against Transformers' apply_chat_template: text and
ids for multi-turn conversations with and without a system message and generation prompt, tools, documents,
continue_final_message, raise_exception, strftime_now, return_dict, batches, named templates."""

from __future__ import annotations

import functools
import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.chat_templates import LLAMA3_TEMPLATES, LLAMA31, SPM_TEMPLATES
from support.llama3 import converted_dir
from test_tokenizer_fast import spm_fast_dir

from mlx_llama.errors import TokenizerError
from mlx_llama.tokenizer import AutoTokenizer

transformers = pytest.importorskip("transformers")
jinja2 = pytest.importorskip("jinja2")

S = {"role": "system", "content": "You are a helpful assistant. "}
U1 = {"role": "user", "content": " Hello! 😀"}
A1 = {"role": "assistant", "content": "Hi there. How can I help?\n"}
U2 = {"role": "user", "content": "What is 2+2? Answer in 东京 style."}
A2 = {"role": "assistant", "content": " 4 "}
CONVERSATIONS = [[U1], [S, U1], [U1, A1, U2], [S, U1, A1, U2], [U1, A1, U2, A2], [S, U1, A1, U2, A2]]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "Città, e.g. Zürich"}},
            "required": ["city"],
        },
    },
}
TOOL_CALL = {"role": "assistant", "tool_calls": [{"type": "function", "function": {
    "name": "get_weather", "arguments": {"city": "Zürich"}}}]}  # fmt: skip
TOOL_RESULT = {"role": "tool", "content": {"temperature": 21, "unit": "°C"}}


@functools.cache
def spm_pair():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = spm_fast_dir(True)
        return AutoTokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


@functools.cache
def llama3_pair():
    path = converted_dir(small=True)
    return AutoTokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


def both(ours, hf, conversation, **kwargs):
    """Render with both; equal text and ids, or the same template error message."""
    try:
        expected = hf.apply_chat_template(conversation, tokenize=False, **kwargs)
    except jinja2.TemplateError as exc:
        with pytest.raises(TokenizerError) as info:
            ours.apply_chat_template(conversation, tokenize=False, **kwargs)
        assert str(exc) in str(info.value)
        return None
    text = ours.apply_chat_template(conversation, tokenize=False, **kwargs)
    assert text == expected
    assert ours.apply_chat_template(conversation, **kwargs) == hf.apply_chat_template(conversation, **kwargs)
    return text


@pytest.mark.parametrize("name", [*SPM_TEMPLATES, *LLAMA3_TEMPLATES])
def test_real_templates_match_transformers(name):
    ours, hf = llama3_pair() if name in LLAMA3_TEMPLATES else spm_pair()
    template = LLAMA3_TEMPLATES.get(name) or SPM_TEMPLATES[name]
    rendered = 0
    for conversation in CONVERSATIONS:
        for gen in (False, True):
            rendered += both(ours, hf, conversation, chat_template=template, add_generation_prompt=gen) is not None
    assert rendered >= 6  # Mistral and Llama 2 refuse some shapes (system role, non-alternating), as intended


def test_llama31_tools_builtin_tools_and_tool_results():
    ours, hf = llama3_pair()
    conversation = [S, U1, TOOL_CALL, TOOL_RESULT]
    for kwargs in ({}, {"tools_in_user_message": False}, {"builtin_tools": ["brave_search", "wolfram_alpha"]},
                   {"date_string": "02 Dec 2026"}):  # fmt: skip
        for gen in (False, True):
            text = both(ours, hf, conversation, chat_template=LLAMA31, tools=[WEATHER_TOOL], add_generation_prompt=gen,
                        **kwargs)  # fmt: skip
            assert '"name": "get_weather"' in text and "Zürich" in text  # tojson keeps non-ASCII
    both(ours, hf, [TOOL_CALL, TOOL_CALL], chat_template=LLAMA31)
    with pytest.raises(TokenizerError, match="single tool-calls"):  # the template's own raise_exception message
        ours.apply_chat_template([U1, {**TOOL_CALL, "tool_calls": TOOL_CALL["tool_calls"] * 2}], chat_template=LLAMA31)


def test_strftime_now_continue_final_message_documents_and_errors():
    ours, hf = llama3_pair()
    assert "Today Date: " in both(ours, hf, [U1], chat_template=LLAMA3_TEMPLATES["llama3.2"])
    partial = [U1, {"role": "assistant", "content": "The answer is "}]
    text = both(ours, hf, partial, chat_template=LLAMA3_TEMPLATES["llama3"], continue_final_message=True)
    assert text.endswith("The answer is")
    rag = "{% for d in documents %}[{{ d.title }}] {{ d.text }}\n{% endfor %}{{ messages[-1].content }}"
    documents = [{"title": "Zürich", "text": "a city"}, {"title": "東京", "text": "another"}]
    both(ours, hf, [U1], chat_template=rag, documents=documents)
    with pytest.raises(TokenizerError, match="cannot both"):
        ours.apply_chat_template(partial, add_generation_prompt=True, continue_final_message=True)
    with pytest.raises(TokenizerError, match="return_assistant_tokens_mask"):
        ours.apply_chat_template([U1], return_assistant_tokens_mask=True)  # never silently ignored
    with pytest.raises(TokenizerError, match="not valid Jinja"):
        ours.apply_chat_template([U1], chat_template="{% if %}")
    sandbox = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(TokenizerError, match="chat template"):
        ours.apply_chat_template([U1], chat_template=sandbox + "{{ ''.__class__.__subclasses__() }}")


def test_return_dict_batches_and_padding():
    ours, hf = spm_pair()
    batch = CONVERSATIONS[:3]
    kwargs = {"chat_template": SPM_TEMPLATES["zephyr"], "add_generation_prompt": True}
    assert ours.apply_chat_template(batch, tokenize=False, **kwargs) == hf.apply_chat_template(
        batch, tokenize=False, **kwargs
    )
    assert ours.apply_chat_template(batch, **kwargs) == hf.apply_chat_template(batch, **kwargs)
    ours.pad_token, hf.pad_token = "<unk>", "<unk>"
    mine = ours.apply_chat_template(batch, return_dict=True, padding=True, return_tensors="np", **kwargs)
    theirs = hf.apply_chat_template(batch, return_dict=True, padding=True, return_tensors="np", **kwargs)
    assert (mine["input_ids"] == theirs["input_ids"]).all()
    assert (mine["attention_mask"] == theirs["attention_mask"]).all()


def test_named_templates_from_files(tmp_path):
    ours, _ = llama3_pair()
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": SPM_TEMPLATES["chatml"]},
                               {"name": "tool_use", "template": LLAMA31}]  # fmt: skip
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = AutoTokenizer.from_pretrained(tmp_path)
    both(ours, hf, [S, U1])  # the default one
    both(ours, hf, [S, U1], tools=[WEATHER_TOOL])  # tools pick "tool_use"
    both(ours, hf, [S, U1], chat_template="tool_use")
    (tmp_path / "chat_template.jinja").write_text(SPM_TEMPLATES["vicuna"])  # newer Transformers save it here
    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = AutoTokenizer.from_pretrained(tmp_path)
    assert both(ours, hf, [S, U1, A1]).startswith("You are a helpful assistant.")


_VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=10)
    | st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), max_size=2)
)
_MESSAGE = st.dictionaries(
    st.sampled_from(["role", "content", "tool_calls"]), _VALUES | st.sampled_from(["user", "assistant", "tool"]),
    max_size=3,
)  # fmt: skip


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    messages=st.one_of(st.lists(_MESSAGE, max_size=4), _VALUES),
    name=st.sampled_from([*SPM_TEMPLATES, *LLAMA3_TEMPLATES, "plain"]),
    flags=st.tuples(st.booleans(), st.booleans()),
    tools=st.none() | st.lists(_VALUES, max_size=2) | st.integers(),
)
def test_malformed_conversations_are_tokenizer_errors(messages, name, flags, tools):
    """Whatever the messages, the outcome is a rendering or a TokenizerError, never another exception."""
    ours, _ = spm_pair()
    template = "plain" if name == "plain" else LLAMA3_TEMPLATES.get(name) or SPM_TEMPLATES[name]
    try:
        if template == "plain":
            ours.chat_template, template = None, None
        ours.apply_chat_template(messages, chat_template=template, add_generation_prompt=flags[0],
                                 continue_final_message=flags[1], tools=tools)  # fmt: skip
    except TokenizerError:
        pass
    finally:
        ours.chat_template = None
