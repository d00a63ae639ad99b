"""Fast tokenizers (tokenizer.json) against Transformers' fast tokenizers, tiktoken and each other.

Oracles: Transformers' `LlamaTokenizerFast(from_slow=True)` builds the tokenizer.json of mistral-common's real
SentencePiece model; Meta's Llama 3 tiktoken file (from the installed llama_models wheel) is encoded by
tiktoken and by Transformers' TikTokenConverter. Corpus: tests/tokenizer_corpus.py (300+ strings).
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import warnings

import pytest
from llama3_helpers import (
    SMALL_RANKS,
    converted_dir,
    llama3_file,
    small_tiktoken_file,
    tiktoken_encoding,
    transformers_tiktoken,
)
from tokenizer_corpus import mistral_model_path, parity_corpus, tiny_model_path

from mlx_llama.errors import TokenizerError
from mlx_llama.tokenizer import AutoTokenizer, LlamaTokenizer, LlamaTokenizerFast, PreTrainedTokenizerFast

transformers = pytest.importorskip("transformers")
REPLACEMENT = "\ufffd"
LLAMA3_EXTRA = ["<|begin_of_text|>hi<|eot_id|>", "I'LL don't 12345 ½", "  \n\n  x\r\n", "ﬁ ﬃ Ǆ", "a" * 300]


@functools.cache
def spm_fast_dir(legacy: bool) -> str:
    """tokenizer.json (and config) written by Transformers from mistral-common's SentencePiece model."""
    import tempfile

    out = tempfile.mkdtemp(prefix="mlx_llama_fast_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.LlamaTokenizerFast(vocab_file=mistral_model_path(), from_slow=True, legacy=legacy)
    hf.save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "nonlegacy"])
def spm_pair(request):
    path = spm_fast_dir(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def llama3_pair():
    """Ours on our tokenizer.json of Meta's file; Transformers' own TikTokenConverter on the same file."""
    return AutoTokenizer.from_pretrained(converted_dir(small=False)), transformers_tiktoken(llama3_file())


def test_auto_tokenizer_picks_like_transformers(spm_pair, tmp_path):
    assert type(spm_pair[0]) is LlamaTokenizerFast and type(spm_pair[1]).__name__ == "LlamaTokenizerFast"
    small = converted_dir(small=True)
    assert type(AutoTokenizer.from_pretrained(small)) is PreTrainedTokenizerFast
    assert type(transformers.AutoTokenizer.from_pretrained(small)).__name__ == "PreTrainedTokenizerFast"
    assert spm_pair[0].padding_side == spm_pair[1].padding_side == "left"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LlamaTokenizer(tiny_model_path(), legacy=True).save_pretrained(tmp_path)
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is LlamaTokenizer  # no tokenizer.json: SentencePiece
    shutil.copyfile(small_tiktoken_file(), tmp_path / "tokenizer.model")  # a Meta Llama 3 directory
    meta = AutoTokenizer.from_pretrained(tmp_path)
    text = "Hello world, it's 2024!"
    assert meta.encode(text) == [SMALL_RANKS, *tiktoken_encoding(small_tiktoken_file()).encode(text)]
    (tmp_path / "tokenizer.model").unlink()
    with pytest.raises(TokenizerError, match="no tokenizer found"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_spm_ids_decodes_and_batches_match_transformers(spm_pair):
    ours, hf = spm_pair
    corpus = parity_corpus()
    assert len(corpus) >= 300
    for text in corpus:
        ids = hf.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.tokenize(text) == hf.tokenize(text), text
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text
    ours.pad_token, hf.pad_token = "<unk>", "<unk>"
    for side in ("left", "right"):
        batch = corpus[:40]
        a = ours(batch, padding=True, padding_side=side, return_tensors="np")
        b = hf(batch, padding=True, padding_side=side, return_tensors="np")
        assert (a["input_ids"] == b["input_ids"]).all() and (a["attention_mask"] == b["attention_mask"]).all()
    a = ours(corpus[:20], truncation=True, max_length=5)["input_ids"]
    assert a == hf(corpus[:20], truncation=True, max_length=5)["input_ids"]
    pairs = ours(corpus[1:9], corpus[9:17], truncation=True, max_length=9)
    assert pairs["input_ids"] == hf(corpus[1:9], corpus[9:17], truncation=True, max_length=9)["input_ids"]


@pytest.mark.parametrize("legacy", [True, False])
def test_from_slow_equals_transformers_conversion(legacy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = LlamaTokenizerFast(vocab_file=mistral_model_path(), from_slow=True, legacy=legacy)
        hf = transformers.LlamaTokenizerFast(vocab_file=mistral_model_path(), from_slow=True, legacy=legacy)
    for text in parity_corpus()[::2]:
        assert ours.encode(text) == hf.encode(text), text
    assert ours.add_bos_token and not ours.add_eos_token
    ours.add_eos_token, hf.add_eos_token = True, True
    assert ours.encode("Hello world") == hf.encode("Hello world") and ours.encode("Hello")[-1] == 2


def test_llama3_ids_equal_tiktoken_and_transformers(llama3_pair):
    ours, hf = llama3_pair
    encoding = tiktoken_encoding(llama3_file())
    for text in parity_corpus() + LLAMA3_EXTRA:
        expected = encoding.encode(text, allowed_special="all")
        assert ours.encode(text, add_special_tokens=False) == expected == hf.encode(text, add_special_tokens=False)
        ids = ours.encode(text)
        assert ids == [128000, *expected]  # <|begin_of_text|> from the post-processor, as on the Hub
        assert ours.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == encoding.decode(
            expected
        ).replace("<|begin_of_text|>", "").replace("<|eot_id|>", "")


def test_llama3_decode_padding_and_special_ids_match_transformers(llama3_pair):
    ours, hf = llama3_pair
    assert (ours.bos_token_id, ours.eos_token_id, len(ours), ours.vocab_size) == (
        hf.bos_token_id, hf.eos_token_id, len(hf), hf.vocab_size
    )  # fmt: skip
    assert ours.convert_tokens_to_ids(["<|eom_id|>", "<|python_tag|>"]) == [128008, 128010]
    assert ours.clean_up_tokenization_spaces  # as the Hub's Llama 3 tokenizer_config.json
    for text in parity_corpus()[::3] + LLAMA3_EXTRA:
        ids = ours.encode(text)
        assert ours.decode(ids) == hf.decode(ids, clean_up_tokenization_spaces=True)
        assert ours.decode(ids, skip_special_tokens=True) == hf.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=True
        )
    ours.pad_token, hf.pad_token = "<|finetune_right_pad_id|>", "<|finetune_right_pad_id|>"
    batch = parity_corpus()[:30]
    kw = {"add_special_tokens": False}
    assert ours(batch, padding=True, **kw)["input_ids"] == hf(batch, padding=True, **kw)["input_ids"]
    mine = ours(batch, padding="max_length", max_length=40, truncation=True, **kw)
    theirs = hf(batch, padding="max_length", max_length=40, truncation=True, **kw)
    assert mine["input_ids"] == theirs["input_ids"] and mine["attention_mask"] == theirs["attention_mask"]


def check_stream(ours, hf, ids: list[int]) -> str:
    detok = ours.detokenizer()
    emitted = ""
    for k, token in enumerate(ids):
        emitted += detok.add_token(token)
        full = hf.decode(ids[: k + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert full.startswith(emitted) or full.startswith(emitted.rstrip(REPLACEMENT)), (ids[: k + 1], emitted)
    emitted += detok.finalize()
    assert emitted == detok.text == hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return emitted


def test_streaming_equals_decode(spm_pair, llama3_pair):
    rng = random.Random(0)
    for ours, hf in (spm_pair, llama3_pair):
        for text in parity_corpus()[::6] + LLAMA3_EXTRA:
            assert REPLACEMENT not in check_stream(ours, hf, hf.encode(text))
        # random ids: byte tokens, the start and middle of multi-byte characters, special tokens
        multibyte = hf.encode("é 东京 😀 🇫🇷 ﬁ", add_special_tokens=False)
        pool = [*multibyte, *rng.sample(range(len(ours)), 300), *ours.all_special_ids]
        for _ in range(30):
            check_stream(ours, hf, [rng.choice(pool) for _ in range(rng.randrange(1, 20))])


def test_streaming_is_constant_work_per_token(llama3_pair):
    ours, hf = llama3_pair
    calls = []
    ours_decode = ours.decode
    ours.decode = lambda *a, **k: calls.append(1) or ours_decode(*a, **k)
    try:
        detok = ours.detokenizer()
        text = "".join(detok.add_token(i) for i in ours.encode("word " * 200)) + detok.finalize()
    finally:
        del ours.decode
    assert calls == [] and text == "word " * 200


def test_save_pretrained_round_trip_loads_in_transformers(tmp_path):
    ours = AutoTokenizer.from_pretrained(converted_dir(small=True))
    ours.add_tokens(["<new tok>"])
    ours.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "a <new tok> b<|eot_id|>"
    assert again.encode(text) == hf.encode(text) == ours.encode(text)
    assert hf.chat_template == ours.chat_template == again.chat_template


def test_bad_files_are_tokenizer_errors(tmp_path):
    path = spm_fast_dir(True)
    with pytest.raises(TokenizerError, match="add_bos_token"):
        AutoTokenizer.from_pretrained(path, add_bos_token=True, bos_token=None)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        PreTrainedTokenizerFast.from_pretrained(tmp_path)
    shutil.copyfile(f"{path}/tokenizer.json", tmp_path / "tokenizer.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LlamaTokenizer(tiny_model_path(), legacy=True).save_pretrained(tmp_path / "slow")
    for bad_id in (3_000_000, 99_999_999):  # an added token far beyond the vocabulary: refused, no huge tables
        token = {"content": "<bogus>", "special": True}
        for where in (tmp_path, tmp_path / "slow"):
            (where / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {str(bad_id): token}}))
            with pytest.raises(TokenizerError, match=f"added token id {bad_id} is out of range"):
                AutoTokenizer.from_pretrained(where)
    for field, value in (("add_bos_token", "yes"), ("padding_side", 3), ("model_max_length", "big"),
                         ("chat_template", 7), ("bos_token", 1), ("added_tokens_decoder", [1])):  # fmt: skip
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({field: value}))
        with pytest.raises(TokenizerError, match=f"field '{field}'"):
            AutoTokenizer.from_pretrained(tmp_path)
    ours = AutoTokenizer.from_pretrained(path)
    with pytest.raises(TokenizerError, match="out of range"):
        ours.decode([len(ours)])
    with pytest.raises(TokenizerError, match="out of range"):
        ours.detokenizer().add_token(-1)


def test_llama3_template_ids_equal_metas_reference_encoder(llama3_pair):
    """Meta's own dialog encoder (llama_models' ChatFormat) is an oracle for the Llama 3 Instruct template."""
    from llama_models.datatypes import RawMessage
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    from mlx_llama.checkpoint.llama3_templates import LLAMA3

    ours, _ = llama3_pair
    meta = ChatFormat(Tokenizer(llama3_file()))
    dialog = [("system", "You are terse."), ("user", "Hi! 😀 What's 2+2?"), ("assistant", "4."), ("user", "东京?")]
    for n in range(1, len(dialog) + 1):
        messages = [{"role": r, "content": c} for r, c in dialog[:n]]
        want = meta.encode_dialog_prompt([RawMessage(role=r, content=c) for r, c in dialog[:n]]).tokens
        assert ours.apply_chat_template(messages, chat_template=LLAMA3, add_generation_prompt=True) == want
