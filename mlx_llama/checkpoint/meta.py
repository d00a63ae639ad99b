"""The original Meta LLaMA 1/2 layout: params.json, consolidated.NN.pth tensor-parallel shards and
tokenizer.model.

The only place that knows the Meta -> Transformers weight names, which axis each tensor was split on, and the
q/k row permutation (Meta's interleaved rotary pairs -> Transformers' rotate-half order). Tensors are merged
one at a time, each shard's slice copied straight from its mapped file into the merged (and permuted) buffer.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConversionError, shorten
from ..jsonio import read_json_object
from . import llama3, tiktoken_bpe
from .spec import TensorSpec
from .torch_pickle import LazyTensor, load_torch_file

__all__ = ["MetaCheckpoint", "TensorSpec", "detect_version", "find_shards", "hf_name", "read_params"]

# Meta per-layer name -> (Transformers name inside model.layers.i, shard axis or None when replicated)
_LAYER = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
# LLaMA 1/2 use fairscale's ParallelEmbedding, which splits the embedding dimension (axis 1).
_GLOBAL = {
    "tok_embeddings.weight": ("model.embed_tokens.weight", 1),
    "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
}
_DROPPED = {"rope.freqs"}  # precomputed rotary table in LLaMA 1 files; not a weight
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)")
CONTEXT_LENGTH = {"1": 2048, "2": 4096}
VERSIONS = (*CONTEXT_LENGTH, *llama3.LLAMA3_VERSIONS)


def hf_name(meta_name: str) -> tuple[str, int | None] | None:
    """Transformers name and shard axis for a Meta tensor name; None for tensors that are dropped."""
    if meta_name in _DROPPED:
        return None
    if meta_name in _GLOBAL:
        return _GLOBAL[meta_name]
    match = _LAYER_RE.fullmatch(meta_name)
    if match and match.group(2) in _LAYER:
        name, axis = _LAYER[match.group(2)]
        return f"model.layers.{match.group(1)}.{name}", axis
    raise ConversionError(f"unknown tensor {meta_name!r} in a Meta checkpoint; is this a LLaMA 1/2 checkpoint?")


def intermediate_size(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """Meta's FFN width: 2/3 of 4*dim, times the multiplier, rounded up to a multiple of `multiple_of`."""
    hidden = int(2 * 4 * dim / 3)
    hidden = int((ffn_dim_multiplier or 1.0) * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


_LIMIT = 1 << 20  # no LLaMA dimension, head or layer count comes near this


def _number(
    params: dict, key: str, path: Path, *, integer: bool, required: bool = True, default=None, positive: bool = True
):
    """params[key] checked: an int (or any finite number), positive unless told otherwise, within _LIMIT."""
    if key not in params or params[key] is None:
        if required:
            raise CheckpointError(f"{path}: field {key!r} is missing")
        return default
    value = params[key]
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok and not integer:
        ok = math.isfinite(value)
    if ok and positive:
        ok = 0 < value and (not integer or value <= _LIMIT)
    if not ok:
        kind = "integer" if integer else "number"
        raise CheckpointError(
            f"{path}: field {key!r} must be a {'positive ' if positive else ''}{kind}, got {shorten(value)}"
        )
    return value


def read_params(directory: Path) -> dict:
    """params.json as a dict (unwrapping the {"model": {...}} form some releases use), its fields validated."""
    path = directory / "params.json"
    params = read_json_object(path, hint="a Meta checkpoint directory needs params.json")
    if isinstance(params.get("model"), dict):
        params = params["model"]
    for key in ("dim", "n_layers", "n_heads"):
        _number(params, key, path, integer=True)
    _number(params, "norm_eps", path, integer=False)
    for key in ("n_kv_heads", "multiple_of"):
        _number(params, key, path, integer=True, required=False)
    for key in ("ffn_dim_multiplier", "rope_theta"):
        _number(params, key, path, integer=False, required=False)
    vocab = _number(params, "vocab_size", path, integer=True, required=False, default=-1, positive=False)
    if vocab != -1 and not 0 < vocab <= 1 << 24:
        raise CheckpointError(f"{path}: field 'vocab_size' must be -1 or a positive integer, got {vocab}")
    return params


def find_shards(directory: Path) -> list[Path]:
    """consolidated.NN.pth files sorted by their number (the concatenation order); numbers must run 0..n-1."""
    shards = []
    for path in directory.glob("consolidated.*.pth"):
        match = re.fullmatch(r"consolidated\.(\d+)\.pth", path.name)
        if match:
            shards.append((int(match.group(1)), path))
    shards.sort()
    for expected, (number, path) in enumerate(shards):
        if number != expected:
            raise CheckpointError(
                f"{directory}: consolidated.{expected:02d}.pth is missing (found {path.name}); a Meta checkpoint "
                "has shards numbered 00, 01, ... without gaps"
            )
    return [p for _, p in shards]


def find_tokenizer(directory: Path) -> Path | None:
    """tokenizer.model beside the shards, or one level up as in Meta's LLaMA 1 download."""
    for candidate in (directory / "tokenizer.model", directory.parent / "tokenizer.model"):
        if candidate.is_file():
            return candidate
    return None


def detect_version(params: dict, override: str | None, path: Path, tokenizer: Path | None = None) -> str:
    """'1' or '2': LLaMA 1 ships norm_eps 1e-6, Llama 2 1e-5 (and GQA's n_kv_heads); 3.x: see `llama3`."""
    if override is not None:
        if str(override) not in VERSIONS:
            raise ConversionError(f"--llama-version {override!r}: expected one of {', '.join(VERSIONS)}")
        return str(override)
    if llama3.looks_like_llama3(params, tokenizer):
        return llama3.infer_version(params)
    if "n_kv_heads" in params or params["norm_eps"] == 1e-5:
        return "2"
    if params["norm_eps"] == 1e-6:
        return "1"
    raise ConversionError(f"{path}: cannot tell the LLaMA version from these params; pass --llama-version 1 or 2")


def read_tokenizer(path: Path):
    """The sentencepiece model (its size is the Meta vocab size when params.json says -1)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a sentencepiece model ({exc})") from None
    return processor


class MetaCheckpoint:
    """An original Meta checkpoint directory, read lazily; `read(name)` builds one merged tensor."""

    def __init__(self, directory: str | Path, llama_version: str | None = None, instruct: bool = False):
        self.directory = Path(directory)
        self.params = read_params(self.directory)
        self.instruct = instruct
        self.tokenizer_path = find_tokenizer(self.directory)
        self.version = detect_version(self.params, llama_version, self.directory / "params.json", self.tokenizer_path)
        self.is_llama3 = self.version in llama3.LLAMA3_VERSIONS
        paths = find_shards(self.directory)
        if not paths:
            raise CheckpointError(f"{self.directory}: params.json found but no consolidated.NN.pth shard")
        self.shard_paths = paths
        self.shards = [load_torch_file(p) for p in paths]
        self._sources: dict[str, tuple[str, int | None]] = {}
        self._specs = self._plan()
        self.config = self._derive_config()

    # -- planning ------------------------------------------------------------------------------------------
    def _plan(self) -> list[TensorSpec]:
        first, first_path = self.shards[0], self.shard_paths[0]
        names = [n for n in first if n not in _DROPPED]
        for shard, path in zip(self.shards[1:], self.shard_paths[1:], strict=True):
            other = {n for n in shard if n not in _DROPPED}
            missing, extra = sorted(set(names) - other), sorted(other - set(names))
            if missing or extra:
                what = f"lacks {missing[0]}" if missing else f"has an unexpected {extra[0]}"
                raise CheckpointError(f"{path}: {what} compared with {first_path.name}; shards do not match")
        specs = []
        for meta in names:
            try:
                mapped = hf_name(meta)
            except ConversionError as exc:
                raise ConversionError(f"{first_path}: {exc}") from None
            if mapped is None:
                continue
            name, axis = mapped
            if self.is_llama3 and name == "model.embed_tokens.weight":
                axis = 0  # Llama 3 splits the embedding over the vocabulary (VocabParallelEmbedding)
            shape, dtype = self._check_shards(meta, axis)
            if axis is not None:
                shape = tuple(n * len(self.shards) if i == axis else n for i, n in enumerate(shape))
            self._sources[name] = (meta, axis)
            specs.append(TensorSpec(name, shape, dtype))
        return specs

    def _check_shards(self, meta: str, axis: int | None) -> tuple[tuple[int, ...], str]:
        ref = self.shards[0][meta]
        for shard, path in zip(self.shards[1:], self.shard_paths[1:], strict=True):
            t = shard[meta]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise CheckpointError(
                    f"{path}: {meta} is {t.dtype}{list(t.shape)} but {self.shard_paths[0].name} has "
                    f"{ref.dtype}{list(ref.shape)}; shards must split the model evenly"
                )
        return ref.shape, ref.dtype

    def _heads(self) -> tuple[int, int, int]:
        """(n_heads, n_kv_heads, head_dim), consistent with dim and splittable across the shards."""
        p, params_path = self.params, self.directory / "params.json"
        dim, n_heads = p["dim"], p["n_heads"]
        n_kv = p.get("n_kv_heads") or n_heads
        n_shards = len(self.shards)
        if dim % n_heads or n_heads % n_kv or (dim // n_heads) % 2:
            raise CheckpointError(
                f"{params_path}: dim {dim}, n_heads {n_heads}, n_kv_heads {n_kv} are inconsistent (dim must be "
                "n_heads times an even head size, n_heads a multiple of n_kv_heads)"
            )
        if n_heads % n_shards or n_kv % n_shards:
            raise ConversionError(
                f"{self.directory}: {n_shards} shards cannot split {n_heads} heads / {n_kv} kv heads evenly "
                "(replicated kv heads are not supported)"
            )
        return n_heads, n_kv, dim // n_heads

    def _check_shapes(self, n_kv: int, head_dim: int, ffn: int) -> None:
        """The merged shapes of the weights agree with params.json, and there are exactly n_layers layers."""
        dim, n_layers = self.params["dim"], self.params["n_layers"]
        shapes = {s.name: s.shape for s in self._specs}
        expected = {
            "model.embed_tokens.weight": (None, dim),
            "model.norm.weight": (dim,),
            "lm_head.weight": (None, dim),
        }
        for i in range(n_layers):
            p = f"model.layers.{i}."
            expected.update(
                {
                    p + "self_attn.q_proj.weight": (dim, dim),
                    p + "self_attn.k_proj.weight": (n_kv * head_dim, dim),
                    p + "self_attn.v_proj.weight": (n_kv * head_dim, dim),
                    p + "self_attn.o_proj.weight": (dim, dim),
                    p + "mlp.gate_proj.weight": (ffn, dim),
                    p + "mlp.up_proj.weight": (ffn, dim),
                    p + "mlp.down_proj.weight": (dim, ffn),
                    p + "input_layernorm.weight": (dim,),
                    p + "post_attention_layernorm.weight": (dim,),
                }
            )
        extra = sorted(set(shapes) - set(expected))
        if extra:
            raise CheckpointError(
                f"{self.shard_paths[0]}: {extra[0]} is not expected with n_layers {n_layers} in params.json"
            )
        for name, want in expected.items():
            got = shapes.get(name)
            if got is None:
                raise CheckpointError(f"{self.shard_paths[0]}: {name} is missing (params.json has n_layers {n_layers})")
            if len(got) != len(want) or any(w not in (None, g) for w, g in zip(want, got)):
                implied = ["vocab" if w is None else w for w in want]
                raise CheckpointError(
                    f"{self.shard_paths[0]}: {name} has merged shape {list(got)}, params.json implies {implied}"
                )

    def _vocab(self) -> tuple[int, int, int]:
        """(vocab_size, bos id, eos id): params.json, the tokenizer and the embedding rows must agree."""
        shapes = {s.name: s.shape for s in self._specs}
        rows = shapes["model.embed_tokens.weight"][0]
        if shapes["lm_head.weight"][0] != rows:
            raise CheckpointError(
                f"{self.shard_paths[0]}: output.weight has {shapes['lm_head.weight'][0]} rows, the embedding {rows}"
            )
        vocab, bos, eos = self.params.get("vocab_size", -1), 1, 2
        if self.is_llama3:
            vocab = self._llama3_vocab(vocab, rows)
        elif self.tokenizer_path is not None:
            sp = read_tokenizer(self.tokenizer_path)
            sp_vocab, bos, eos = sp.GetPieceSize(), sp.bos_id(), sp.eos_id()
            if sp_vocab != rows:
                raise CheckpointError(f"{self.tokenizer_path}: {sp_vocab} pieces, but the embedding has {rows} rows")
        if vocab <= 0:
            vocab = rows
        if vocab != rows:
            raise CheckpointError(
                f"{self.directory / 'params.json'}: vocab_size {vocab} but the embedding has {rows} rows"
            )
        return vocab, bos, eos

    def _derive_config(self) -> dict:
        """The Transformers config.json of this checkpoint, after checking params.json against the weights."""
        p = self.params
        n_heads, n_kv, head_dim = self._heads()
        ffn = intermediate_size(p["dim"], p.get("multiple_of") or 256, p.get("ffn_dim_multiplier"))
        self._check_shapes(n_kv, head_dim, ffn)
        vocab, bos, eos = self._vocab()
        rope_theta = float(p.get("rope_theta") or 10000.0)
        # CodeLlama (rope_theta 1e6) was trained to 16384 positions.
        max_pos = 16384 if rope_theta > 10000 else CONTEXT_LENGTH.get(self.version, 0)
        config = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": p["dim"],
            "intermediate_size": ffn,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv,
            "num_hidden_layers": p["n_layers"],
            "head_dim": head_dim,
            "vocab_size": vocab,
            "max_position_embeddings": max_pos,
            "rms_norm_eps": float(p["norm_eps"]),
            "rope_theta": rope_theta,
            "rope_scaling": None,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "tie_word_embeddings": False,
            "use_cache": True,
            "bos_token_id": bos,
            "eos_token_id": eos,
        }
        if self.is_llama3:
            config.update(llama3.config_updates(self.version, p, self.instruct, n_base=vocab - llama3.NUM_SPECIAL))
        return config

    def _llama3_vocab(self, vocab: int, rows: int) -> int:
        """The vocabulary of a 3.x checkpoint: its tiktoken file's tokens + 256 specials must fill the embedding."""
        if self.tokenizer_path is not None:
            where = self.tokenizer_path
            if not llama3.is_tiktoken_file(where):
                raise CheckpointError(f"{where}: a Llama 3 checkpoint needs Meta's tiktoken tokenizer.model")
            n = llama3.vocab_size(where)
            if n != rows:
                raise CheckpointError(f"{where}: {n} tokens with the specials, but the embedding has {rows} rows")
            vocab = n if vocab <= 0 else vocab
        return rows if vocab <= 0 else vocab

    def write_tokenizer(self, out: Path) -> None:
        """tokenizer.model plus the configs Transformers' LlamaTokenizer reads (LLaMA 1/2 conventions); for
        Llama 3.x a tokenizer.json made from the tiktoken file, and generation_config.json."""
        if self.tokenizer_path is None:
            print(f"warning: no tokenizer.model beside {self.directory}; the output has no tokenizer", file=sys.stderr)
            return
        if self.is_llama3:
            context = self.config["max_position_embeddings"]
            tiktoken_bpe.write_tokenizer(self.tokenizer_path, out, self.version, context, self.instruct)
            gen = llama3.generation_config(self.version, self.instruct, self.config["bos_token_id"])
            (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
            return
        shutil.copyfile(self.tokenizer_path, out / "tokenizer.model")
        sp = read_tokenizer(self.tokenizer_path)
        special = {
            "bos_token": sp.IdToPiece(sp.bos_id()),
            "eos_token": sp.IdToPiece(sp.eos_id()),
            "unk_token": sp.IdToPiece(sp.unk_id()),
        }
        tokenizer_config = {
            "tokenizer_class": "LlamaTokenizer",
            **special,
            "pad_token": None,
            "add_bos_token": True,
            "add_eos_token": False,
            "legacy": True,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.config["max_position_embeddings"],
        }
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")

    # -- reading -------------------------------------------------------------------------------------------
    def specs(self) -> list[TensorSpec]:
        """Every output tensor, in checkpoint order, with its merged shape; nothing is read."""
        return list(self._specs)

    def read(self, name: str) -> np.ndarray:
        """The merged (and for q/k permuted) tensor `name` as a numpy array (bfloat16 as raw uint16)."""
        meta, axis = self._sources[name]
        parts: list[LazyTensor] = [shard[meta] for shard in self.shards]
        if axis is None:
            return parts[0].numpy()
        spec = next(s for s in self._specs if s.name == name)
        out = np.empty(spec.shape, dtype=parts[0].np_dtype)
        heads = None
        if name.endswith("q_proj.weight"):
            heads = int(self.params["n_heads"])
        elif name.endswith("k_proj.weight"):
            heads = int(self.params.get("n_kv_heads") or self.params["n_heads"])
        if heads is not None:
            # Write each shard's heads already permuted: view the output as [heads, 2, hd/2, in] and fill
            # it through its transpose [heads, hd/2, 2, in], which is the Meta row order.
            rows, cols = spec.shape
            hd = rows // heads
            grid = out.reshape(heads, 2, hd // 2, cols)
            per = heads // len(parts)
            for s, part in enumerate(parts):
                part.numpy(out=grid[s * per : (s + 1) * per].transpose(0, 2, 1, 3))
            return out
        step = parts[0].shape[axis]
        for s, part in enumerate(parts):
            index = [slice(None)] * out.ndim
            index[axis] = slice(s * step, (s + 1) * step)
            part.numpy(out=out[tuple(index)])
        return out
