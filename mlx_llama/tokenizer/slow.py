"""LlamaTokenizer on SentencePiece alone, behaving like Transformers' slow `LlamaTokenizer` (4.57).

Why a port and not a wrapper: users script the tokenizer exactly as the Transformers docs show (`legacy`,
special tokens written inside the text, padding, `decode` rules), and the run time must not need
`transformers`. Where Transformers' slow and fast tokenizers disagree, this follows the slow one.

Quick tour::

    tok = LlamaTokenizer.from_pretrained("path/to/checkpoint")
    ids = tok.encode("Hello <s>.")                      # [bos, ...]; "<s>" in the text is the bos token
    batch = tok(["a", "longer text"], padding=True, return_tensors="mlx")  # input_ids, attention_mask
    text = tok.decode(ids, skip_special_tokens=True)
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    detok = tok.detokenizer()                            # streaming: detok.add_token(id) -> new text
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import sentencepiece as spm

from ..errors import TokenizerError
from .added import AddedToken, as_added_token, check_added_ids
from .base import TokenizerBase, check_side, id_list
from .files import CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, VOCAB_FILE, read_init_kwargs, template_for_config, write_json

SPIECE_UNDERLINE = "\u2581"
# A serialized `normalizer_spec { add_dummy_prefix: false }` (ModelProto field 3, NormalizerSpec field 3).
# Protobuf parsers merge a repeated embedded-message field, so appending it to the model file overrides just
# that flag, the same as Transformers' MergeFrom, without needing the protobuf package at run time.
_NO_DUMMY_PREFIX = bytes([0x1A, 0x02, 0x18, 0x00])


def _load_sentencepiece(vocab_file: str, strip_dummy_prefix: bool, sp_model_kwargs: dict[str, Any]):
    """Read tokenizer.model; return (processor, original file bytes).

    With `strip_dummy_prefix` (legacy=False) the model is loaded with `add_dummy_prefix=False`, as
    Transformers does, so that no "▁" is added after special tokens.
    """
    if not os.path.isfile(vocab_file):
        raise TokenizerError(
            f"SentencePiece model not found: {vocab_file!r}. A LLaMA tokenizer needs its {VOCAB_FILE} file "
            "(copy it from the original checkpoint)."
        )
    with open(vocab_file, "rb") as f:
        raw = f.read()
    processor = spm.SentencePieceProcessor(**sp_model_kwargs)
    try:
        processor.LoadFromSerializedProto(raw + _NO_DUMMY_PREFIX if strip_dummy_prefix else raw)
    except (RuntimeError, OSError) as exc:
        raise TokenizerError(
            f"{vocab_file!r} is not a valid SentencePiece model (corrupt or truncated?): {exc}"
        ) from exc
    if processor.get_piece_size() == 0:
        raise TokenizerError(f"{vocab_file!r} is not a valid SentencePiece model: it holds no vocabulary pieces")
    return processor, raw


class LlamaTokenizer(TokenizerBase):
    """SentencePiece BPE tokenizer with the behaviour of Transformers' slow `LlamaTokenizer`.

    Arguments and defaults are Transformers': `legacy=None` means True (old behaviour: every text chunk,
    including the one right after a special token, gets SentencePiece's dummy "▁" prefix); `legacy=False`
    adds the prefix only once at the start of the text. `padding_side` defaults to "right" as in the slow
    tokenizer. Special tokens written inside the text ("Hello <s>.") are recognised and mapped to their ids.
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE}

    def __init__(
        self,
        vocab_file: str,
        unk_token: str | AddedToken | None = "<unk>",
        bos_token: str | AddedToken | None = "<s>",
        eos_token: str | AddedToken | None = "</s>",
        pad_token: str | AddedToken | None = None,
        sp_model_kwargs: dict[str, Any] | None = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        clean_up_tokenization_spaces: bool = False,
        use_default_system_prompt: bool = False,
        spaces_between_special_tokens: bool = False,
        legacy: bool | None = None,
        add_prefix_space: bool = True,
        *,
        additional_special_tokens: Sequence[str | AddedToken] | None = None,
        added_tokens_decoder: dict[int, Any] | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
        model_max_length: int | None = None,
        chat_template: str | None = None,
    ) -> None:
        if legacy is None:
            warnings.warn(
                "LlamaTokenizer: `legacy` not set, using the legacy behaviour (legacy=True) as Transformers does; "
                "pass legacy=False for the fixed handling of text after special tokens.",
                stacklevel=2,
            )
            legacy = True
        check_side("padding_side", padding_side)
        check_side("truncation_side", truncation_side)
        self.legacy = bool(legacy)
        self.vocab_file = vocab_file
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.use_default_system_prompt = use_default_system_prompt
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.add_prefix_space = add_prefix_space
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.model_max_length = model_max_length
        self.chat_template = chat_template
        self.sp_model, self._model_bytes = _load_sentencepiece(vocab_file, not self.legacy, self.sp_model_kwargs)
        self._pieces = [self.sp_model.id_to_piece(i) for i in range(self.sp_model.get_piece_size())]
        self._piece_ids = {p: i for i, p in enumerate(self._pieces)}
        self._stream_cache: tuple | None = None
        self._split_re: re.Pattern | None = None
        self._added_decoder: dict[int, AddedToken] = {}
        self._added_encoder: dict[str, int] = {}
        decoder = {int(i): as_added_token(t, special=False) for i, t in (added_tokens_decoder or {}).items()}
        check_added_ids(sorted(decoder), self.vocab_size, CONFIG_FILE)
        for index, tok in decoder.items():
            self._added_decoder[index] = tok
            self._added_encoder[tok.content] = index
        self._init_special((bos_token, eos_token, unk_token, pad_token), additional_special_tokens)
        self._register([t for t in self._special_tokens_extended() if t.content not in self._added_encoder])

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> LlamaTokenizer:
        """Load from a directory holding `tokenizer.model` (+ `tokenizer_config.json`, `special_tokens_map.json`,
        `added_tokens.json`, chat template files when present). Keyword arguments override the files."""
        path = os.fspath(path)
        init = read_init_kwargs(path)
        init.update(kwargs)
        return cls(os.path.join(path, VOCAB_FILE), **init)

    def save_pretrained(self, path: str | os.PathLike) -> tuple[str, ...]:
        """Write tokenizer.model, tokenizer_config.json and special_tokens_map.json (Transformers can read them)."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        vocab_out = os.path.join(path, VOCAB_FILE)
        with open(vocab_out, "wb") as f:
            f.write(self._model_bytes)  # the original proto, never the legacy=False variant
        config: dict[str, Any] = {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "add_prefix_space": self.add_prefix_space,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "legacy": self.legacy,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "sp_model_kwargs": self.sp_model_kwargs,
            "spaces_between_special_tokens": self.spaces_between_special_tokens,
            "use_default_system_prompt": self.use_default_system_prompt,
            "added_tokens_decoder": {str(i): asdict(t) for i, t in sorted(self._added_decoder.items())},
            "additional_special_tokens": [t.content for t in self._additional_special],
        }
        special_map: dict[str, Any] = {}
        for attr, tok in self._special.items():
            config[attr] = tok.content if tok is not None else None
            if tok is not None:
                special_map[attr] = {k: v for k, v in asdict(tok).items() if k != "special"}
        if self._additional_special:
            special_map["additional_special_tokens"] = [t.content for t in self._additional_special]
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if self.chat_template is not None:
            config["chat_template"] = template_for_config(self.chat_template)
        config_out = os.path.join(path, CONFIG_FILE)
        map_out = os.path.join(path, SPECIAL_TOKENS_MAP_FILE)
        write_json(config_out, config)
        write_json(map_out, special_map)
        return vocab_out, config_out, map_out

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str]:
        """Write the sentencepiece model only, as `[prefix-]tokenizer.model`; returns `(path,)` as Transformers."""
        if not os.path.isdir(save_directory):
            raise TokenizerError(f"{save_directory}: save_vocabulary needs an existing directory")
        name = f"{filename_prefix}-{VOCAB_FILE}" if filename_prefix else VOCAB_FILE
        out = os.path.join(os.fspath(save_directory), name)
        with open(out, "wb") as f:
            f.write(self._model_bytes)
        return (out,)

    def _register(self, tokens: Iterable[AddedToken]) -> int:
        """Give each token an id: its piece id if SentencePiece knows it, else the next free id."""
        added = 0
        for tok in tokens:
            if not tok.content or tok.content in self._added_encoder:
                continue
            vocab = self.get_vocab()
            if tok.content in vocab:
                index = vocab[tok.content]
            else:
                index = len(vocab)
                added += 1
            self._added_decoder[index] = tok
            self._added_encoder[tok.content] = index
        self._special_changed()
        return added

    def _special_changed(self) -> None:
        self._split_re = None

    @property
    def vocab_size(self) -> int:
        """Number of SentencePiece pieces (added tokens not included, as in Transformers)."""
        return len(self._pieces)

    def __len__(self) -> int:
        """Pieces plus added tokens that are not pieces (the size of `get_vocab()`, computed cheaply)."""
        return self.vocab_size + sum(1 for content in self._added_encoder if content not in self._piece_ids)

    def get_vocab(self) -> dict[str, int]:
        """token -> id for every piece and added token."""
        vocab = dict(self._piece_ids)
        vocab.update(self._added_encoder)
        return vocab
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._added_decoder.items()))

    def convert_tokens_to_ids(self, tokens: str | Sequence[str] | None) -> int | list[int] | None:
        """Token string(s) -> id(s); unknown strings map to the unk id, as SentencePiece does."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            if tokens in self._added_encoder:
                return self._added_encoder[tokens]
            return self._piece_ids.get(tokens, self.sp_model.unk_id())
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) -> token string(s); raises TokenizerError for an id outside the vocabulary."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(int(i)) for i in ids if int(i) not in special]

    def _id_to_token(self, index: int) -> str:
        if index in self._added_decoder:
            return self._added_decoder[index].content
        if 0 <= index < len(self._pieces):
            return self._pieces[index]
        raise TokenizerError(
            f"token id {index} is out of range: this tokenizer has ids 0..{len(self) - 1} "
            f"({self.vocab_size} SentencePiece pieces + {len(self) - self.vocab_size} added tokens)"
        )

    # ------------------------------------------------------------------ encoding
    def _splitter(self) -> re.Pattern | None:
        if self._split_re is None:
            contents = sorted(self._added_encoder, key=len, reverse=True)
            self._split_re = re.compile("|".join(re.escape(c) for c in contents)) if contents else None
        return self._split_re

    def _split_added(self, text: str) -> list[str | AddedToken]:
        """Cut the text at added tokens (longest match first), applying their lstrip/rstrip/single_word flags."""
        pattern = self._splitter()
        if pattern is None:
            return [text]
        parts: list[str | AddedToken] = []
        pos = 0
        for match in pattern.finditer(text):
            parts.append(text[pos : match.start()])
            parts.append(self._added_decoder[self._added_encoder[match.group()]])
            pos = match.end()
        parts.append(text[pos:])
        for i, part in enumerate(parts):
            if not isinstance(part, AddedToken):
                continue
            left = parts[i - 1] if i > 0 else None
            right = parts[i + 1] if i + 1 < len(parts) else None
            if part.rstrip and isinstance(right, str) and right:
                parts[i + 1] = right.lstrip()
            if part.lstrip and isinstance(left, str) and left:
                parts[i - 1] = left.rstrip()
            if part.single_word and isinstance(left, str) and left and left[-1] != " ":
                parts[i - 1] = left + part.content
                parts[i] = ""
            elif part.single_word and isinstance(right, str) and right and right[0] != " ":
                parts[i + 1] = part.content + right
                parts[i] = ""
        return [p for p in parts if isinstance(p, AddedToken) or p]

    def _encode_chunk(self, chunk: str) -> list[str]:
        """SentencePiece pieces of one piece of text between added tokens."""
        if self.legacy or not chunk.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp_model.encode(chunk, out_type=str)
        # legacy=False: the model has no dummy prefix and would drop a leading "▁"; encode behind the unk text
        # and cut its pieces off again, so the leading space survives.
        prefix_len = len(self.sp_model.encode(self.unk_token, out_type=str))
        pieces = self.sp_model.encode(self.unk_token + chunk, out_type=str)
        return pieces[prefix_len:] if len(pieces) >= prefix_len else pieces

    def tokenize(self, text: str) -> list[str]:
        """Text -> token strings (SentencePiece pieces and added tokens), before any bos/eos is added."""
        if not isinstance(text, str):
            raise TokenizerError(f"tokenize expects a str, got {type(text).__name__}")
        if not self.legacy and text:
            text = text.replace(SPIECE_UNDERLINE, " ")
            if self.add_prefix_space:
                text = SPIECE_UNDERLINE + text
        tokens: list[str] = []
        for part in self._split_added(text):
            if isinstance(part, AddedToken):
                tokens.append(part.content)
            else:
                tokens.extend(self._encode_chunk(part))
        if (
            not self.legacy
            and len(tokens) > 1
            and tokens[0] == SPIECE_UNDERLINE
            and tokens[1] in self.all_special_tokens
        ):
            tokens = tokens[1:]
        return tokens

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """`[bos] + A + [eos]` (+ the same around B), each per `add_bos_token`/`add_eos_token`."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + list(token_ids_0) + eos
        if token_ids_1 is not None:
            out += bos + list(token_ids_1) + eos
        return out

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where build_inputs_with_special_tokens puts bos/eos, else 0 (or: 1 on any special id already there)."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise TokenizerError("already_has_special_tokens=True takes one sequence of ids, not a pair")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        out = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            out += bos + [0] * len(token_ids_1) + eos
        return out

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """0 over the first sequence with its bos/eos, 1 over the second."""
        n_special = int(self.add_bos_token) + int(self.add_eos_token)
        out = [0] * (len(token_ids_0) + n_special)
        if token_ids_1 is not None:
            out += [1] * (len(token_ids_1) + n_special)
        return out

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    def _truncate(self, ids: list[int], pair: list[int] | None, max_length: int, add_special: bool):
        """Transformers' "longest_first" truncation so that the result, special tokens included, fits."""
        n_special = self.num_special_tokens_to_add(pair is not None) if add_special else 0
        excess = len(ids) + (len(pair) if pair is not None else 0) + n_special - max_length
        if excess <= 0:
            return ids, pair
        if self.truncation_side not in ("left", "right"):
            raise TokenizerError(f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}")

        def cut(seq: list[int], n: int) -> list[int]:
            if n <= 0:
                return seq
            return seq[:-n] if self.truncation_side == "right" else seq[n:]

        if pair is None:
            if len(ids) <= excess:
                raise TokenizerError(
                    f"max_length={max_length} is too small: the special tokens alone need {n_special} positions"
                )
            return cut(ids, excess), None
        first = min(abs(len(pair) - len(ids)), excess)
        second = excess - first
        if len(ids) > len(pair):
            n_ids, n_pair = first + second // 2, second - second // 2
        else:
            n_ids, n_pair = second // 2, first + second - second // 2
        return cut(ids, n_ids), cut(pair, n_pair)

    def _ids_of(self, text: str | list[int]) -> list[int]:
        if isinstance(text, str):
            return self.convert_tokens_to_ids(self.tokenize(text))
        if isinstance(text, (list, tuple)) and all(isinstance(i, (int, np.integer)) for i in text):
            return [int(i) for i in text]
        raise TokenizerError(f"expected a str (or a list of ids), got {type(text).__name__}")

    def _encode_one(self, text, text_pair, add_special_tokens: bool, limit: int | None) -> dict:
        ids = self._ids_of(text)
        pair = self._ids_of(text_pair) if text_pair is not None else None
        if limit is not None:
            ids, pair = self._truncate(ids, pair, limit, add_special_tokens)
        if add_special_tokens:
            input_ids = self.build_inputs_with_special_tokens(ids, pair)
            type_ids = self.create_token_type_ids_from_sequences(ids, pair)
        else:
            input_ids = ids + (pair or [])
            type_ids = [0] * len(ids) + [1] * len(pair or [])
        return {"input_ids": input_ids, "token_type_ids": type_ids, "attention_mask": [1] * len(input_ids)}

    def _encode_rows(self, texts, pairs, add_special_tokens: bool, truncation, max_length: int | None) -> list[dict]:
        limit = self._truncation_limit(truncation, max_length)
        pairs = pairs if pairs is not None else [None] * len(texts)
        return [self._encode_one(t, p, add_special_tokens, limit) for t, p in zip(texts, pairs, strict=True)]

    # ------------------------------------------------------------------ decoding
    def standalone_added_tokens(self) -> set[str]:
        """Added tokens decoded as standalone pieces: non-special ones, and special ones beyond the vocab."""
        special = set(self.all_special_tokens)
        out = {c for c in self._added_encoder if c not in special}
        out |= {t for t in self.additional_special_tokens if self.convert_tokens_to_ids(t) >= self.vocab_size}
        return out

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Token strings -> text, with the slow tokenizer's space rules around special tokens.

        The first token loses its "▁" (the prefix space added at encoding); special tokens are written as
        their text; with legacy=True a space is inserted before the text that precedes a special token.
        """
        if not tokens:
            return ""
        tokens = list(tokens)
        if tokens[0].startswith(SPIECE_UNDERLINE) and self.add_prefix_space:
            tokens[0] = tokens[0][1:]
        special = set(self.all_special_tokens)
        out: list[str] = []
        run: list[str] = []
        prev_special = False
        for i, token in enumerate(tokens):
            if token in special:
                if not prev_special and i != 0 and self.legacy:
                    out.append(" ")
                out.append(self.sp_model.decode_pieces(run) + token)
                run = []
                prev_special = True
            else:
                if prev_special and i == 1 and self.add_prefix_space and not token.startswith(SPIECE_UNDERLINE):
                    out.append(" ")
                run.append(token)
                prev_special = False
        out.append(self.sp_model.decode_pieces(run))
        return "".join(out)

    def _sub_texts(self, tokens: list[str], skip_special_tokens: bool) -> list[str]:
        """Runs of ordinary tokens decoded together; standalone added tokens as their own texts."""
        standalone = self.standalone_added_tokens()
        special = set(self.all_special_tokens)
        texts: list[str] = []
        run: list[str] = []
        for token in tokens:
            if skip_special_tokens and token in special:
                continue
            if token not in standalone:
                run.append(token)
                continue
            if run:
                piece = self.convert_tokens_to_string(run)
                if piece:
                    texts.append(piece)
                run = []
            texts.append(token)
        if run:
            texts.append(self.convert_tokens_to_string(run))
        return texts

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        spaces_between_special_tokens: bool = True,
    ) -> str:
        """Ids -> text exactly as Transformers' slow tokenizer (note: the first token's prefix space is dropped,
        so decoding token by token loses spaces; use `detokenizer()` to stream)."""
        tokens = self.convert_ids_to_tokens(id_list(token_ids), skip_special_tokens=skip_special_tokens)
        texts = self._sub_texts(tokens, skip_special_tokens)
        text = (" " if spaces_between_special_tokens else "").join(texts)
        return self._maybe_clean_up(text, clean_up_tokenization_spaces)

    def detokenizer(self):
        """A fresh streaming detokenizer for this tokenizer (see mlx_llama.tokenizer.spm_stream)."""
        from .spm_stream import StreamingDetokenizer, StreamTable

        key = (len(self), tuple(self.all_special_tokens), self.legacy, self.add_prefix_space)
        if self._stream_cache is None or self._stream_cache[0] != key:
            self._stream_cache = (key, StreamTable(self))
        return StreamingDetokenizer(self, self._stream_cache[1])

    @property
    def chat_format(self) -> str:
        """ "jinja" when the checkpoint has a chat template, else "plain" (see mlx_llama.tokenizer.chat)."""
        return "jinja" if self.has_chat_template else "plain"

    def __repr__(self) -> str:
        return (
            f"LlamaTokenizer(vocab_file={self.vocab_file!r}, vocab_size={self.vocab_size}, len={len(self)}, "
            f"legacy={self.legacy}, add_bos_token={self.add_bos_token}, add_eos_token={self.add_eos_token}, "
            f"padding_side={self.padding_side!r}, chat_format={self.chat_format!r})"
        )
