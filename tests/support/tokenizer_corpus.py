"""Shared data for the tokenizer tests: the parity corpus and a tiny SentencePiece model trained on demand.

The model is trained once per test process (a few hundred ms) with LLaMA's trainer options, so the tests
need no download: BPE, byte fallback, split digits, whitespace-only pieces, no extra-whitespace removal,
identity normalisation, dummy prefix.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

from .spm import train_spm

MISTRAL_V1 = "tokenizer.model.v1"  # the 32000-piece Llama-family model shipped in mistral_common/data/

_TRAIN_TEXT = """The quick brown fox jumps over the lazy dog.
Hello world! Hello there, how are you doing today?
Plants create energy through a process known as photosynthesis.
In 2023 there were 1234 apples and 5678 oranges; 90% were eaten.
def main():\n    return print("hello")\n
Café crème brûlée, naïve façade, São Paulo, Zürich, Ærø.
东京是日本的首都。我喜欢学习语言。你好，世界！
Это простой текст на русском языке для проверки.
    indented    text with   several spaces and\ttabs\tinside.
Numbers: 3.14159, 2.71828, 1,000,000 and 42.
The model is trained to predict the next token in a sequence of tokens.
A tokenizer splits text into pieces; each piece has an id in the vocabulary.
"""


def _training_lines() -> list[str]:
    lines = _TRAIN_TEXT.splitlines()
    return [f"{line} {i}" if i % 3 else line for i in range(40) for line in lines if line]


@functools.cache
def tiny_model_path() -> str:
    """Train (once per process) a 512-piece LLaMA-style BPE model; return the path of its .model file."""
    out_dir = tempfile.mkdtemp(prefix="mlx_llama_tiny_spm_")
    atexit.register(shutil.rmtree, out_dir, True)
    model = train_spm(
        _training_lines(),
        512,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        character_coverage=0.9995,
        max_sentencepiece_length=16,
    )
    path = os.path.join(out_dir, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model)
    return path


def mistral_model_path() -> str:
    """The real Llama-family tokenizer.model from the installed mistral-common package."""
    import mistral_common

    return os.path.join(os.path.dirname(mistral_common.__file__), "data", MISTRAL_V1)


MODELS = {"tiny": tiny_model_path, "mistral-v1": mistral_model_path}  # name -> function giving its path
# Parametrisation of the module fixtures that build one tokenizer per (model, legacy) pair.
MODEL_LEGACY = dict(
    params=[(m, legacy) for m in MODELS for legacy in (True, False)], ids=lambda p: f"{p[0]}-legacy{p[1]}"
)

_BASE = [
    "",
    "Hello",
    "Hello world",
    "Hello world!",
    "hello, world. How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "Plants create energy through a process known as",
    "Hello <s>.",
    "Hello <s>",
    "<s>Hello",
    "<s> Hello",
    "Hello</s>",
    "Hello </s> world",
    "a<unk>b",
    "<unk>",
    "<s>",
    "</s>",
    "<s></s>",
    "<s> </s>",
    "x <s> y </s> z",
    "<s>\n",
    "<<s>>",
    "</s>.",
    "2023",
    "1234567890",
    "3.14159",
    "1,000,000 and 42",
    "pi is 3.14 and e is 2.718",
    "version 10.2.33-rc1",
    "Café crème brûlée",
    "naïve façade",
    "Zürich, São Paulo, Ærø",
    "东京是日本的首都。",
    "你好，世界！",
    "日本語のテキスト",
    "한국어 텍스트",
    "Это простой текст",
    "مرحبا بالعالم",
    "emoji 😀 smile",
    "😀😃😄",
    "👨‍👩‍👧‍👦 family",
    "flags 🇫🇷🇯🇵",
    "🤖🦙 llama",
    "mixed 日本 and 😀 and é",
    "tab\tseparated\tvalues",
    "\ttab first",
    "line one\nline two",
    "\n",
    "\n\n",
    "\n\nHello",
    "trailing newline\n",
    "trailing space ",
    "trailing spaces   ",
    "    four leading spaces",
    "multiple   inner    spaces",
    "\r\nwindows line",
    "▁already▁underlined",
    "▁",
    "▁▁",
    "▁Hello",
    "def main():\n    return 1\n",
    'print("hello")',
    '{"key": [1, 2, 3]}',
    "a ,b",
    "3 3",
    "don't can't won't I'm",
    "Hello . world , again !",
    "ÀÉÎÕÜ àéîõü",
    "ﬁ ligature and ½ fraction",
    "zero\u200bwidth",
    "nbsp\u00a0space",
    "\u3000ideographic space",
    "combining e\u0301",
    "math ∑∫√∞ ≠ ≤",
    "a" * 50,
    "ab " * 20,
]

_PREFIXES = ["", " ", "  ", "\n", "\t", " \n "]
_SUFFIX_SPECIALS = ["", "<s>", "</s>", " <s> ", "<unk>"]


def parity_corpus() -> list[str]:
    """At least 300 strings: the base list, its whitespace-prefixed variants and special tokens around them."""
    out = list(_BASE)
    for i, text in enumerate(_BASE[1:]):
        out.append(_PREFIXES[i % len(_PREFIXES)] + text)
        out.append(text + _SUFFIX_SPECIALS[i % len(_SUFFIX_SPECIALS)] + _BASE[(i * 7) % len(_BASE)])
        out.append("<s>" + _PREFIXES[(i + 1) % len(_PREFIXES)] + text)
        out.append(text + _PREFIXES[(i + 2) % len(_PREFIXES)])
    seen: dict[str, None] = {}
    for text in out:
        seen.setdefault(text, None)
    return list(seen)
