"""StreamingDetokenizer against Transformers' slow LlamaTokenizer.decode(skip_special_tokens=True) (the oracle).

Invariant checked after every token: what was emitted is a prefix of the oracle's decode of the ids so far,
and the rest is only the U+FFFD of a held-back incomplete character (at most 3 bytes); after finalize() the
two are equal. Text that is valid UTF-8 never makes the stream emit U+FFFD.
"""

from __future__ import annotations

import random
import warnings
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.tokenizer_corpus import mistral_model_path, parity_corpus, tiny_model_path

from mlx_llama.errors import TokenizerError
from mlx_llama.tokenizer import LlamaTokenizer, StreamingDetokenizer

transformers = pytest.importorskip("transformers")

MODELS = {"tiny": tiny_model_path, "mistral-v1": mistral_model_path}
REPLACEMENT = "\ufffd"


@pytest.fixture(
    scope="module",
    params=[(m, legacy) for m in MODELS for legacy in (True, False)],
    ids=lambda p: f"{p[0]}-legacy{p[1]}",
)
def pair(request):
    name, legacy = request.param
    path = MODELS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LlamaTokenizer(path, legacy=legacy), transformers.LlamaTokenizer(vocab_file=path, legacy=legacy)


def check_stream(ours, oracle, ids: list[int]) -> str:
    detok = ours.detokenizer()
    emitted = ""
    for k, token in enumerate(ids):
        new = detok.add_token(token)
        emitted += new
        full = oracle.decode(ids[: k + 1], skip_special_tokens=True)
        rest = full[len(emitted) :]
        assert full.startswith(emitted), (ids[: k + 1], emitted, full)
        assert rest == REPLACEMENT * len(rest) and len(rest) <= 3, (ids[: k + 1], emitted, full)
    emitted += detok.finalize()
    assert emitted == detok.text == oracle.decode(ids, skip_special_tokens=True), ids
    return emitted


_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def id_pools(tok: LlamaTokenizer) -> list[list[int]]:
    """Ids grouped by kind, so random sequences often hit the hard cases (computed once per tokenizer)."""
    if tok not in _POOLS:
        _POOLS[tok] = _make_pools(tok)
    return _POOLS[tok]


def _make_pools(tok: LlamaTokenizer) -> list[list[int]]:
    sp = tok.sp_model
    byte_ids = [i for i in range(tok.vocab_size) if sp.is_byte(i)]
    utf8_leads = [3 + b for b in (0xC3, 0xE4, 0xE6, 0xF0)]  # starts of é, CJK, emoji
    continuation = [3 + b for b in range(0x80, 0xC0)]
    spaces = [i for i in range(tok.vocab_size) if sp.id_to_piece(i).strip("\u2581") == ""]
    words = [i for i in range(tok.vocab_size) if sp.id_to_piece(i).startswith("\u2581")]
    return [byte_ids, utf8_leads, continuation, spaces, words, [0, 1, 2], list(range(tok.vocab_size))]


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_stream_equals_decode_on_random_sequences(pair, data):
    ours, oracle = pair
    pools = id_pools(ours)
    ids = data.draw(
        st.lists(st.sampled_from(range(len(pools))).flatmap(lambda p: st.sampled_from(pools[p])), max_size=24)
    )
    check_stream(ours, oracle, ids)


def test_stream_of_real_text_never_emits_replacement(pair):
    ours, oracle = pair
    for text in parity_corpus()[::3]:
        ids = ours.encode(text)
        emitted = check_stream(ours, oracle, ids)
        assert REPLACEMENT not in emitted


def test_multibyte_characters_wait_for_their_last_byte(pair):
    ours, oracle = pair
    emoji = [3 + b for b in "😀".encode()]  # byte-fallback ids <0xF0> <0x9F> <0x98> <0x80>
    detok = ours.detokenizer()
    assert [detok.add_token(i) for i in [1, *emoji]] == ["", "", "", "", "😀"]
    assert detok.add_token(3 + 0x0A) == "\n"  # <0x0A>
    cjk = [3 + b for b in "京".encode()]
    assert [detok.add_token(i) for i in cjk] == ["", "", "京"]
    assert detok.add_token(3 + 0xE4) == ""  # an unfinished character at the end ...
    assert detok.finalize() == REPLACEMENT  # ... is written as decode writes it
    assert detok.text == oracle.decode([1, *emoji, 3 + 0x0A, *cjk, 3 + 0xE4], skip_special_tokens=True)


def test_leading_space_rules(pair):
    """The first token's "▁" is dropped once per sequence, and a lone leading "▁" does not eat the next space."""
    ours, oracle = pair
    sp = ours.sp_model
    ids = [1, sp.piece_to_id("\u2581"), *ours.encode(" leading x", add_special_tokens=False)[-2:]]
    text = check_stream(ours, oracle, ids)
    pieces = ours.convert_ids_to_tokens(ids)
    if pieces[2:] == ["\u2581leading", "\u2581x"]:
        # Transformers drops the first "▁"; with legacy=True SentencePiece's dummy-prefix rule drops one more
        assert text == ("leading x" if ours.legacy else " leading x")
    hello = ours.encode("Hello world")
    detok = ours.detokenizer()
    pieces = [detok.add_token(i) for i in hello]
    assert "".join(pieces) + detok.finalize() == "Hello world"
    assert pieces[0] == "" and pieces[1] and not pieces[1].startswith(" ")  # bos writes nothing, no prefix space


def test_added_tokens_stream_like_decode():
    path = tiny_model_path()
    for legacy in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = LlamaTokenizer(path, legacy=legacy)
            oracle = transformers.LlamaTokenizer(vocab_file=path, legacy=legacy)
        for tok in (ours, oracle):
            tok.add_tokens(["<extra>", "he"])
            tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<sp1>"]})
        extra = [512, 513, 514, ours.convert_tokens_to_ids("he")]
        pools = [*id_pools(ours), extra, extra]
        rng = random.Random(3)
        for _ in range(300):
            ids = [rng.choice(rng.choice(pools)) for _ in range(rng.randrange(0, 10))]
            check_stream(ours, oracle, ids)


def test_constant_work_per_token(pair, monkeypatch):
    """Streaming never re-decodes: decode and SentencePiece's decoders are not called while streaming."""
    ours, oracle = pair
    ids = ours.encode("Streaming 😀 东京 text,\n with\tmany   tokens " * 20)
    detok = StreamingDetokenizer(ours)

    def forbidden(*args, **kwargs):
        raise AssertionError("the stream re-decoded")

    monkeypatch.setattr(ours, "decode", forbidden)
    for name in ("decode", "decode_pieces", "decode_ids", "DecodePieces", "DecodeIds"):
        monkeypatch.setattr(ours.sp_model, name, forbidden)
    held = 0
    for token in ids:
        detok.add_token(token)
        held = max(held, len(detok._bytes))
    detok.finalize()
    monkeypatch.undo()
    assert held <= 3 and detok.text == oracle.decode(ids, skip_special_tokens=True)


def test_reset_last_segment_and_errors(pair):
    ours, _ = pair
    detok = ours.detokenizer()
    for token in ours.encode("Hello world"):
        detok.add_token(token)
    assert detok.last_segment == detok.text == "Hello world"
    assert detok.last_segment == ""
    assert detok.tokens == ours.encode("Hello world")
    detok.reset()
    assert detok.text == "" and detok.tokens == []
    for token in ours.encode("Hello"):
        detok.add_token(token)
    assert detok.finalize() == "" and detok.text == "Hello"  # the leading-space rule applies again
    with pytest.raises(TokenizerError, match="out of range"):
        detok.add_token(len(ours))
    with pytest.raises(TokenizerError, match="out of range"):
        detok.add_token(-1)
