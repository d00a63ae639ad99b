"""Fast tokenizers on Hugging Face's `tokenizers` library, reading `tokenizer.json` (Llama 3's byte-level BPE,
the Llama 2 fine-tunes that ship no tokenizer.model), behaving like Transformers' `PreTrainedTokenizerFast`
and `LlamaTokenizerFast` (4.57): same special tokens, post-processor, padding, truncation and decode rules.

    tok = LlamaTokenizerFast.from_pretrained("path/to/checkpoint")   # or AutoTokenizer.from_pretrained(...)
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ..errors import TokenizerError
from .added import AddedToken, as_added_token, check_added_ids
from .base import TokenizerBase, check_side, id_list
from .files import (
    CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_FILE,
    VOCAB_FILE,
    read_init_kwargs,
    template_for_config,
    write_json,
)


def _load_backend(tokenizer_file: str):
    import tokenizers

    if not os.path.isfile(tokenizer_file):
        raise TokenizerError(f"{tokenizer_file}: missing; a fast tokenizer needs its {TOKENIZER_FILE}")
    try:
        return tokenizers.Tokenizer.from_file(tokenizer_file)
    except Exception as exc:  # the library raises plain Exception for a corrupt file
        raise TokenizerError(f"{tokenizer_file}: not a valid tokenizers file ({exc})") from None


def _backend_token(tok: AddedToken):
    import tokenizers

    return tokenizers.AddedToken(
        tok.content,
        single_word=tok.single_word,
        lstrip=tok.lstrip,
        rstrip=tok.rstrip,
        normalized=tok.normalized,
        special=tok.special,
    )


class PreTrainedTokenizerFast(TokenizerBase):
    """A `tokenizer.json` tokenizer: encoding, decoding and the post-processor (bos) are the file's own."""

    padding_side = "right"
    tokenizer_class_name = "PreTrainedTokenizerFast"

    def __init__(
        self,
        tokenizer_file: str | None = None,
        *,
        tokenizer_object: Any = None,
        bos_token: str | AddedToken | None = None,
        eos_token: str | AddedToken | None = None,
        unk_token: str | AddedToken | None = None,
        pad_token: str | AddedToken | None = None,
        additional_special_tokens: Sequence[str | AddedToken] | None = None,
        added_tokens_decoder: dict[int, Any] | None = None,
        clean_up_tokenization_spaces: bool = False,
        padding_side: str | None = None,
        truncation_side: str = "right",
        model_max_length: int | None = None,
        chat_template: str | dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        check_side("padding_side", padding_side or self.padding_side)
        check_side("truncation_side", truncation_side)
        self.padding_side = padding_side or type(self).padding_side
        self.truncation_side = truncation_side
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.chat_template = chat_template
        self.init_kwargs = dict(kwargs)  # other tokenizer_config.json fields, kept for save_pretrained
        self.tokenizer_file = tokenizer_file
        if tokenizer_object is not None:
            self._tokenizer = tokenizer_object
        elif tokenizer_file is not None:
            self._tokenizer = _load_backend(tokenizer_file)
        else:
            raise TokenizerError(f"a fast tokenizer needs tokenizer_file= (a {TOKENIZER_FILE}) or tokenizer_object=")
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._stream_cache: tuple | None = None
        self._sizes = (0, 0)
        self._count()
        self._check_backend_ids()
        self._init_special((bos_token, eos_token, unk_token, pad_token), additional_special_tokens)
        self._add_missing(added_tokens_decoder or {})

    def _check_backend_ids(self) -> None:
        ids = sorted(self._tokenizer.get_added_tokens_decoder())
        check_added_ids(ids, self.vocab_size, self.tokenizer_file or TOKENIZER_FILE)

    def _add_missing(self, added_tokens_decoder: dict[int, Any]) -> None:
        """Add the config's added tokens and the special tokens the backend does not know (as Transformers)."""
        decoder = {int(i): as_added_token(t, special=False) for i, t in added_tokens_decoder.items()}
        check_added_ids(sorted(decoder), self.vocab_size, CONFIG_FILE)
        known = {t.content for t in self.added_tokens_decoder.values()}
        new = [t for _, t in sorted(decoder.items()) if t.content not in known]
        names = {t.content for t in new} | known
        new += [t for t in self._special_tokens_extended() if t.content not in names]
        special = set(self.all_special_tokens)
        self._register([AddedToken(**{**asdict(t), "special": t.special or t.content in special}) for t in new])

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerFast:
        """Load from a directory holding `tokenizer.json` (+ tokenizer_config.json, special_tokens_map.json,
        chat template files when present). Keyword arguments override the files."""
        path = os.fspath(path)
        init = read_init_kwargs(path)
        init.update(kwargs)
        init.setdefault("tokenizer_file", os.path.join(path, TOKENIZER_FILE))
        vocab = os.path.join(path, VOCAB_FILE)
        if os.path.isfile(vocab):
            init.setdefault("vocab_file", vocab)
        return cls(**init)

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {**self.init_kwargs, "tokenizer_class": self.tokenizer_class_name}
        config.pop("vocab_file", None)
        config.update(
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
            padding_side=self.padding_side,
            truncation_side=self.truncation_side,
            added_tokens_decoder={str(i): asdict(t) for i, t in self.added_tokens_decoder.items()},
            additional_special_tokens=self.additional_special_tokens,
        )
        for attr, tok in self._special.items():
            config[attr] = tok.content if tok is not None else None
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if self.chat_template is not None:
            config["chat_template"] = template_for_config(self.chat_template)
        return config

    def save_pretrained(self, path: str | os.PathLike) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (Transformers reads them)."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        out = os.path.join(path, TOKENIZER_FILE)
        self._tokenizer.save(out)
        config_out, map_out = os.path.join(path, CONFIG_FILE), os.path.join(path, SPECIAL_TOKENS_MAP_FILE)
        write_json(config_out, self._config())
        special_map = {a: asdict(t) for a, t in self._special.items() if t is not None}
        for value in special_map.values():
            value.pop("special")
        if self._additional_special:
            special_map["additional_special_tokens"] = self.additional_special_tokens
        write_json(map_out, special_map)
        return out, config_out, map_out

    # ------------------------------------------------------------------ vocabulary
    @property
    def backend_tokenizer(self):
        """The `tokenizers.Tokenizer` doing the work."""
        return self._tokenizer

    def _count(self) -> None:
        """Cache the sizes: the library rebuilds the whole vocabulary to count it (tens of ms for Llama 3)."""
        backend = self._tokenizer
        self._sizes = (backend.get_vocab_size(with_added_tokens=False), backend.get_vocab_size(with_added_tokens=True))

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary, added tokens not included (as in Transformers)."""
        return self._sizes[0]

    def __len__(self) -> int:
        return self._sizes[1]

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        decoder = self._tokenizer.get_added_tokens_decoder()
        return {i: as_added_token(t, special=False) for i, t in sorted(decoder.items())}

    def _register(self, tokens: Iterable[AddedToken]) -> int:
        before = len(self)
        for tok in tokens:
            if not tok.content:
                continue
            if tok.special:
                self._tokenizer.add_special_tokens([_backend_token(tok)])
            else:
                self._tokenizer.add_tokens([_backend_token(tok)])
        self._count()
        self._special_changed()
        return len(self) - before

    def convert_tokens_to_ids(self, tokens: str | Sequence[str] | None) -> int | list[int] | None:
        """Token string(s) -> id(s); an unknown string maps to the unk id (None without an unk token)."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            if index is None and self.unk_token is not None and tokens != self.unk_token:
                return self.convert_tokens_to_ids(self.unk_token)
            return index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def _check_ids(self, ids: list[int]) -> None:
        size = len(self)
        for index in ids:
            if not 0 <= index < size:
                raise TokenizerError(f"token id {index} is out of range: this tokenizer has ids 0..{size - 1}")

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) -> token string(s); raises TokenizerError for an id outside the vocabulary."""
        if isinstance(ids, (int, np.integer)):
            self._check_ids([int(ids)])
            return self._tokenizer.id_to_token(int(ids))
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(i) for i in ids if i not in special]

    # ------------------------------------------------------------------ encoding and decoding
    def tokenize(self, text: str) -> list[str]:
        """Text -> token strings, before any bos/eos is added."""
        if not isinstance(text, str):
            raise TokenizerError(f"tokenize expects a str, got {type(text).__name__}")
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def _set_truncation(self, limit: int | None) -> None:
        if limit is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(limit, strategy="longest_first", direction=self.truncation_side)

    def _encode_rows(self, texts, pairs, add_special_tokens: bool, truncation, max_length: int | None) -> list[dict]:
        for value in [*texts, *(pairs or [])]:
            if not isinstance(value, str):
                raise TokenizerError(f"expected a str (or a list of str), got {type(value).__name__}")
        inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else list(texts)
        self._set_truncation(self._truncation_limit(truncation, max_length))
        try:
            encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as exc:  # e.g. max_length shorter than the special tokens
            raise TokenizerError(f"cannot encode: {exc}") from None
        finally:
            self._tokenizer.no_truncation()
        return [
            {"input_ids": e.ids, "token_type_ids": e.type_ids, "attention_mask": e.attention_mask} for e in encodings
        ]

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """Ids -> text: the backend's decoder, then `clean_up_tokenization_spaces` (Transformers' fast decode)."""
        ids = id_list(token_ids)
        self._check_ids(ids)
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return self._maybe_clean_up(text, clean_up_tokenization_spaces)

    def detokenizer(self):
        """A fresh streaming detokenizer: O(1) per token for byte-level BPE and SentencePiece-style files."""
        from .bpe_stream import StreamTable, make_detokenizer

        key = len(self), tuple(self.all_special_ids)
        if self._stream_cache is None or self._stream_cache[0] != key:
            self._stream_cache = (key, StreamTable(self))
        return make_detokenizer(self, self._stream_cache[1])

    @property
    def chat_format(self) -> str:
        return "jinja" if self.has_chat_template else "plain"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, len={len(self)}, bos_token={self.bos_token!r}, "
            f"eos_token={self.eos_token!r}, padding_side={self.padding_side!r}, chat_format={self.chat_format!r})"
        )


class LlamaTokenizerFast(PreTrainedTokenizerFast):
    """Transformers' `LlamaTokenizerFast`: the post-processor is rebuilt from `add_bos_token`/`add_eos_token`,
    padding is on the left by default, and `from_slow=True` (or a directory without tokenizer.json) builds the
    tokenizer from `tokenizer.model`."""

    padding_side = "left"
    tokenizer_class_name = "LlamaTokenizerFast"

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        clean_up_tokenization_spaces: bool = False,
        unk_token: str | AddedToken | None = "<unk>",
        bos_token: str | AddedToken | None = "<s>",
        eos_token: str | AddedToken | None = "</s>",
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        use_default_system_prompt: bool = False,
        legacy: bool | None = None,
        add_prefix_space: bool | None = None,
        from_slow: bool = False,
        **kwargs: Any,
    ) -> None:
        if legacy is None:
            warnings.warn(
                "LlamaTokenizerFast: `legacy` not set, using the legacy behaviour (legacy=True) as Transformers "
                "does; it only matters with from_slow=True.",
                stacklevel=2,
            )
            legacy = True
        self.legacy = legacy
        self.vocab_file = vocab_file
        self.use_default_system_prompt = use_default_system_prompt
        self.add_prefix_space = add_prefix_space
        self._add_bos_token, self._add_eos_token = add_bos_token, add_eos_token
        if add_prefix_space is not None:
            from_slow = True
        if from_slow or tokenizer_file is None or not os.path.isfile(tokenizer_file):
            kwargs["tokenizer_object"] = self._from_slow(vocab_file, tokenizer_file, unk_token, bos_token, eos_token)
            tokenizer_file = None
        self._ready = False
        super().__init__(
            tokenizer_file,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            legacy=legacy,
            **kwargs,
        )
        self._ready = True
        self.update_post_processor()

    def _from_slow(self, vocab_file, tokenizer_file, unk_token, bos_token, eos_token):
        from .spm_convert import sentencepiece_to_tokenizers

        if vocab_file is None or not os.path.isfile(vocab_file):
            raise TokenizerError(
                f"no {TOKENIZER_FILE} ({tokenizer_file!r}) and no {VOCAB_FILE} ({vocab_file!r}): a LLaMA tokenizer "
                "needs one of them (copy them from the original checkpoint)"
            )
        return sentencepiece_to_tokenizers(vocab_file, legacy=self.legacy, add_prefix_space=self.add_prefix_space)

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str]:
        """Copy `tokenizer.model` (as `[prefix-]tokenizer.model`); Transformers' rule: only with a vocab file."""
        if not (self.vocab_file and os.path.isfile(self.vocab_file)):
            raise TokenizerError("this fast tokenizer was not loaded with a tokenizer.model, so it has no "
                                 "sentencepiece vocabulary to save (save_pretrained writes tokenizer.json)")
        if not os.path.isdir(save_directory):
            raise TokenizerError(f"{save_directory}: save_vocabulary needs an existing directory")
        name = f"{filename_prefix}-{VOCAB_FILE}" if filename_prefix else VOCAB_FILE
        out = os.path.join(os.fspath(save_directory), name)
        if os.path.abspath(out) != os.path.abspath(self.vocab_file):
            shutil.copyfile(self.vocab_file, out)
        return (out,)

    def update_post_processor(self) -> None:
        """`[bos] A [eos]` (and the same around B) per add_bos_token/add_eos_token, as Transformers builds it."""
        from tokenizers import processors

        bos, eos = self.bos_token, self.eos_token
        if bos is None and self.add_bos_token:
            raise TokenizerError("add_bos_token is true but bos_token is None")
        if eos is None and self.add_eos_token:
            raise TokenizerError("add_eos_token is true but eos_token is None")

        def side(seq: str, type_id: int) -> str:
            parts = [f"{bos}:{type_id}"] if self.add_bos_token else []
            parts.append(f"{seq}:{type_id}")
            return " ".join(parts + ([f"{eos}:{type_id}"] if self.add_eos_token else []))

        single = side("$A", 0)
        special = []
        if self.add_bos_token:
            special.append((bos, self.bos_token_id))
        if self.add_eos_token:
            special.append((eos, self.eos_token_id))
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=single, pair=single + " " + side("$B", 1), special_tokens=special
        )

    def _special_changed(self) -> None:
        if getattr(self, "_ready", False):
            self.update_post_processor()

    add_bos_token = property(lambda self: self._add_bos_token)
    add_eos_token = property(lambda self: self._add_eos_token)

    @add_bos_token.setter
    def add_bos_token(self, value: bool) -> None:
        self._add_bos_token = value
        self.update_post_processor()

    @add_eos_token.setter
    def add_eos_token(self, value: bool) -> None:
        self._add_eos_token = value
        self.update_post_processor()

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config.update(
            add_bos_token=self.add_bos_token,
            add_eos_token=self.add_eos_token,
            legacy=self.legacy,
            use_default_system_prompt=self.use_default_system_prompt,
        )
        if self.add_prefix_space is not None:
            config["add_prefix_space"] = self.add_prefix_space
        return config
