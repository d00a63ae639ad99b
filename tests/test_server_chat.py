"""Chat prompts for the server: the checkpoint's Jinja chat template gives the ids Transformers gives."""

from __future__ import annotations

import json
import shutil

import pytest

from mlx_llama import DEMO_MODEL
from mlx_llama.server.chat import PLAIN_CHAT_STOPS, render_chat_prompt
from mlx_llama.server.protocol import APIError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STRICT = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "{{ bos_token }}[INST] {{ m['content'] }} [/INST]{% endfor %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


def tokenizers(tmp_path, template):
    import transformers

    from mlx_llama.loading import load_tokenizer

    for name in ("tokenizer.model", "special_tokens_map.json"):
        shutil.copy(DEMO_MODEL / name, tmp_path / name)
    config = json.loads((DEMO_MODEL / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    return load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("template", [CHATML, STRICT.replace("raise_exception('no system role')", "''")])
def test_template_ids_equal_transformers(tmp_path, template):
    ours, hf = tokenizers(tmp_path, template)
    ids, stops = render_chat_prompt(ours, MESSAGES)
    assert ids == hf.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    assert stops == []


def test_a_template_error_is_a_400(tmp_path):
    ours, _ = tokenizers(tmp_path, STRICT)
    with pytest.raises(APIError, match="no system role") as info:
        render_chat_prompt(ours, MESSAGES)
    assert info.value.status == 400 and info.value.param == "messages"


def test_no_template_is_the_plain_format_with_its_stop():
    from mlx_llama.loading import load_tokenizer

    tok = load_tokenizer(DEMO_MODEL)
    ids, stops = render_chat_prompt(tok, MESSAGES)
    assert tok.decode(ids, skip_special_tokens=True) == "System: Be brief.\nUser: Hello there\nAssistant:"
    assert ids[0] == tok.bos_token_id and stops == PLAIN_CHAT_STOPS
