"""Chat formats: the Llama 2 chat template (rendered by mlx_llama's Jinja sandbox) and the plain fallback format.

Oracles: Transformers' apply_chat_template with the template shipped in Llama-2-*-chat tokenizer_config.json
(rendered by Jinja), and Meta's reference recipe (llama/generation.py) rebuilt from SentencePiece directly.
"""

from __future__ import annotations

import json
import warnings

import pytest
import sentencepiece as spm
from support.chat_templates import LLAMA2 as LLAMA2_TEMPLATE  # meta-llama/Llama-2-7b-chat-hf
from support.tokenizer_corpus import mistral_model_path, tiny_model_path

from mlx_llama.errors import TokenizerError
from mlx_llama.tokenizer import LlamaTokenizer

transformers = pytest.importorskip("transformers")


THREE_TURNS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi there! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": " 2+2 equals 4. "},
    {"role": "user", "content": "Thanks!"},
]
EXPECTED_TEXT = (
    "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there! How can I help? </s>"
    "<s>[INST] What is 2+2? [/INST] 2+2 equals 4. </s>"
    "<s>[INST] Thanks! [/INST]"
)
# tokenizer.model.v1 with legacy=True (Meta's reference recipe gives the same ids, checked below)
EXPECTED_IDS = [
    1, 733, 16289, 28793, 2087, 18741, 4060, 13, 1976, 460, 264, 10865, 13892, 28723, 13, 28789, 700, 18741,
    4060, 13, 13, 16230, 28808, 733, 28748, 16289, 28793, 15359, 736, 28808, 1602, 541, 315, 1316, 28804,
    28705, 2, 1, 733, 16289, 28793, 1824, 349, 28705, 28750, 28806, 28750, 28804, 733, 28748, 16289, 28793,
    28705, 28750, 28806, 28750, 21588, 28705, 28781, 28723, 28705, 2, 1, 733, 16289, 28793, 8868, 28808, 733,
    28748, 16289, 28793,
]  # fmt: skip

OTHER_CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "  padded  "}, {"role": "assistant", "content": "\nanswer\n"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "empty system"}],
    [{"role": "system", "content": "  sys  "}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
    [
        {"role": "user", "content": "emoji 😀 and 东京"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "<s> inside"},
    ],
    [{"role": "user", "content": "q"}, {"role": "tool", "content": "ignored by the template"}],
]  # fmt: skip


def meta_reference_ids(sp: spm.SentencePieceProcessor, messages: list[dict]) -> list[int]:
    """Meta's llama/generation.py chat encoding: system folded into the first user turn, one sp.encode per turn."""
    b_inst, e_inst, b_sys, e_sys = "[INST]", "[/INST]", "<<SYS>>\n", "\n<</SYS>>\n\n"
    if messages[0]["role"] == "system":
        first = {"role": "user", "content": b_sys + messages[0]["content"] + e_sys + messages[1]["content"]}
        messages = [first, *messages[2:]]
    ids: list[int] = []
    for prompt, answer in zip(messages[::2], messages[1::2], strict=False):
        text = f"{b_inst} {prompt['content'].strip()} {e_inst} {answer['content'].strip()} "
        ids += [sp.bos_id(), *sp.encode(text), sp.eos_id()]
    return ids + [sp.bos_id(), *sp.encode(f"{b_inst} {messages[-1]['content'].strip()} {e_inst}")]


def pair(path: str, legacy: bool, template: str | None = LLAMA2_TEMPLATE):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = LlamaTokenizer(path, legacy=legacy, chat_template=template)
        hf = transformers.LlamaTokenizer(vocab_file=path, legacy=legacy, chat_template=template)
    return ours, hf


def test_three_turn_conversation_exact_text_and_ids():
    ours, hf = pair(mistral_model_path(), legacy=True)
    assert ours.has_chat_template and ours.chat_format == "jinja"
    assert ours.apply_chat_template(THREE_TURNS, tokenize=False) == EXPECTED_TEXT
    assert hf.apply_chat_template(THREE_TURNS, tokenize=False) == EXPECTED_TEXT
    ids = ours.apply_chat_template(THREE_TURNS, add_generation_prompt=True)
    assert ids == EXPECTED_IDS == hf.apply_chat_template(THREE_TURNS)
    assert ids == meta_reference_ids(ours.sp_model, THREE_TURNS)
    assert ours.decode(ids) == hf.decode(ids)


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("model", ["tiny", "mistral-v1"])
def test_matches_transformers_rendering(model, legacy):
    path = tiny_model_path() if model == "tiny" else mistral_model_path()
    ours, hf = pair(path, legacy)
    for messages in [THREE_TURNS, *OTHER_CONVERSATIONS]:
        for gen in (False, True):  # the Llama 2 template ignores add_generation_prompt
            text = ours.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            assert text == hf.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            assert ours.apply_chat_template(messages, add_generation_prompt=gen) == hf.apply_chat_template(
                messages, add_generation_prompt=gen
            )
        plain_roles = all(m["role"] in ("system", "user", "assistant") for m in messages)
        meta_shape = plain_roles and messages[-1]["role"] == "user"  # Meta's recipe ends on a user turn
        if legacy and meta_shape and not any("<s>" in m["content"] for m in messages):
            # legacy=True tokenises like Meta's recipe; legacy=False drops the "▁" before "[INST]" after <s>
            assert ours.apply_chat_template(messages) == meta_reference_ids(ours.sp_model, messages)


def test_roles_must_alternate():
    ours, hf = pair(tiny_model_path(), legacy=False)
    for messages in (
        [{"role": "assistant", "content": "first"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
    ):
        with pytest.raises(TokenizerError, match="must alternate"):
            ours.apply_chat_template(messages)
        with pytest.raises(Exception, match="must alternate"):
            hf.apply_chat_template(messages)
    with pytest.raises(TokenizerError, match="chat template failed"):
        ours.apply_chat_template([{"role": "user"}])


def test_plain_format_without_template():
    ours, _ = pair(tiny_model_path(), legacy=False, template=None)
    assert not ours.has_chat_template and ours.chat_format == "plain"
    text = ours.apply_chat_template(THREE_TURNS, add_generation_prompt=True, tokenize=False)
    assert text == (
        "System: You are a helpful assistant.\nUser: Hello!\nAssistant: Hi there! How can I help?\n"
        "User: What is 2+2?\nAssistant: 2+2 equals 4.\nUser: Thanks!\nAssistant:"
    )
    ids = ours.apply_chat_template(THREE_TURNS, add_generation_prompt=True)
    assert ids[0] == ours.bos_token_id and ids == ours.encode(text)
    assert (
        ours.apply_chat_template(THREE_TURNS[:2], tokenize=False)
        == "System: You are a helpful assistant.\nUser: Hello!\n"
    )


def test_any_template_is_rendered_and_bad_jinja_is_a_clear_error():
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ours, hf = pair(tiny_model_path(), legacy=False, template=template)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " there"}]
    assert ours.apply_chat_template(messages) == hf.apply_chat_template(messages)
    bad, _ = pair(tiny_model_path(), legacy=False, template="{% for m in messages %}")
    with pytest.raises(TokenizerError, match="not valid Jinja"):
        bad.apply_chat_template(messages)


def test_template_read_from_checkpoint_files(tmp_path):
    ours, _ = pair(tiny_model_path(), legacy=True, template=None)
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = LLAMA2_TEMPLATE
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = LlamaTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_format == "jinja"
    expected = loaded.apply_chat_template(THREE_TURNS)

    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").write_text(LLAMA2_TEMPLATE)  # where newer Transformers saves it
    assert LlamaTokenizer.from_pretrained(tmp_path).apply_chat_template(THREE_TURNS) == expected
