"""Tensor- and pipeline-parallel LLaMA on `mx.distributed`, each rank reading only its own part of the weights.

Tensor: every rank builds the model of a "local" config (heads, KV heads and MLP width divided by the
rank count), so q/k/v/gate/up are column shards and o/down row shards of the full weights; each row shard
is followed by one all-reduce. An untied LM head is split by vocabulary (its logits all-gathered); embeddings
and norms are replicated.
Pipeline: rank r keeps a contiguous block of layers; the other layers become `RemoteLayer` stubs that pass
the hidden state on (receiving it from rank r-1 before the block, sending it to rank r+1 after it) and only
count positions in their `OffsetCache`. The last rank computes the logits and an all-reduce (zeros from the
other ranks) gives them to every rank, so generation runs unchanged and identically everywhere.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .cache import make_cache as make_layer_caches
from .checkpoint.layers import check_layer_count
from .checkpoint.safetensors_io import checkpoint_files
from .checkpoint.sliced import SlicedReader
from .dtypes import dtype_name
from .errors import CheckpointError, ConfigError
from .generation.config import GenerationConfig
from .modeling.load_options import auto_dtype, requested_dtype
from .modeling.pretrained import _to_compute_dtype, is_cpu_backend
from .modeling.quantized import quantize_model

MODES = ("tensor", "pipeline")
COLUMN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # split along the output features (axis 0)
ROW = ("o_proj", "down_proj")  # split along the input features (axis 1), then all-reduced


@dataclass
class ParallelPlan:
    """What this rank holds: the mode, its rank among `size`, (pipeline) its layers [first, stop), and how many
    checkpoint bytes it read."""

    mode: str
    rank: int
    size: int
    first: int = 0
    stop: int = 0
    bytes_read: int = 0

    def owns(self, layer: int) -> bool:
        return self.mode == "tensor" or self.first <= layer < self.stop


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the parameters this process holds (quantized ones count their packed size)."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


# ---- modules ---------------------------------------------------------------------------------------------


class AllSumLinear(nn.Module):
    """A row shard: the partial product of this rank's input features, summed over ranks, then the bias once."""

    def __init__(self, inner: nn.Module, group: mx.distributed.Group) -> None:
        super().__init__()
        bias = inner.get("bias")
        if bias is not None:
            del inner["bias"]
            self.bias = bias
        self.inner = inner
        self.group = group

    def __call__(self, x: mx.array) -> mx.array:
        y = mx.distributed.all_sum(self.inner(x), group=self.group)
        return y + self["bias"] if "bias" in self else y


class GatherLinear(nn.Module):
    """A column shard whose outputs every rank needs (the LM head split by vocabulary): gathered after."""

    def __init__(self, inner: nn.Module, group: mx.distributed.Group) -> None:
        super().__init__()
        self.inner, self.group = inner, group

    def __call__(self, x: mx.array) -> mx.array:
        y = self.inner(x)
        gathered = mx.distributed.all_gather(mx.moveaxis(y, -1, 0), group=self.group)  # ranks stack on axis 0
        return mx.moveaxis(gathered, 0, -1)


class OffsetCache:
    """The cache of a layer held by another rank: only its length, so offsets and trims agree on every rank.

    After the last layer of this rank's stage, it keeps the sent hidden state as its `state`, so evaluating
    the caches (chunked prefill) also performs the send the next rank waits for.
    """

    def __init__(self) -> None:
        self.offset = 0
        self.dependency: mx.array | None = None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        raise RuntimeError("this layer's keys and values live on another pipeline rank")

    def advance(self, n: int, dependency: mx.array | None) -> None:
        self.offset += n
        self.dependency = dependency

    @property
    def state(self) -> list[mx.array]:
        return [] if self.dependency is None else [self.dependency]

    def trim(self, n: int) -> int:
        n = min(self.offset, n)
        self.offset -= n
        return n

    nbytes = 0


class RemoteLayer(nn.Module):
    """A decoder layer that runs on another rank: passes the hidden state on, receiving or sending it at the
    edges of this rank's stage."""

    def __init__(self, role: str, peer: int, group: mx.distributed.Group) -> None:
        super().__init__()
        self.role, self.peer, self.group = role, peer, group

    def __call__(
        self, x: mx.array, positions: Any, mask: Any, cache: OffsetCache | None = None, output_attentions: bool = False
    ) -> tuple[mx.array, None]:
        if self.role == "recv":
            x = mx.distributed.recv_like(x, self.peer, group=self.group)
        elif self.role == "send":
            x = mx.distributed.send(x, self.peer, group=self.group)
        if cache is not None:
            cache.advance(x.shape[1], x if self.role == "send" else None)
        return x, None


def _broadcast_logits(out: mx.array | None, like: mx.array, vocab: int, group: mx.distributed.Group) -> mx.array:
    """The last stage's logits on every rank: the others add zeros (made after their hidden state, so their
    send is done before they wait in the all-reduce)."""
    if out is None:
        out = mx.depends(mx.zeros((*like.shape[:-1], vocab), like.dtype), like)
    return mx.distributed.all_sum(out, group=group)


class StageHead(nn.Module):
    """The LM head of a pipeline: computed on the last rank (`inner`), broadcast to all."""

    def __init__(self, inner: nn.Module | None, vocab: int, group: mx.distributed.Group) -> None:
        super().__init__()
        if inner is not None:
            self.inner = inner
        self.vocab, self.group = vocab, group

    def __call__(self, h: mx.array) -> mx.array:
        return _broadcast_logits(self.inner(h) if "inner" in self else None, h, self.vocab, self.group)


class StageEmbedding(nn.Module):
    """The token embedding of a pipeline: a lookup on rank 0, zeros (to be overwritten by the received hidden
    state) elsewhere; with tied weights also the output projection, on the last rank."""

    def __init__(
        self, inner: nn.Module | None, lookup: bool, project: bool, hidden: int, vocab: int, group: mx.distributed.Group
    ) -> None:
        super().__init__()
        if inner is not None:
            self.inner = inner
        self.lookup, self.project, self.hidden, self.vocab, self.group = lookup, project, hidden, vocab, group
        self.dtype = mx.float32

    def __call__(self, ids: mx.array) -> mx.array:
        if self.lookup:
            return self.inner(ids)
        return mx.zeros((*ids.shape, self.hidden), self.dtype)

    def as_linear(self, h: mx.array) -> mx.array:
        return _broadcast_logits(self.inner.as_linear(h) if self.project else None, h, self.vocab, self.group)


# ---- plans -----------------------------------------------------------------------------------------------


def tensor_config(config: Any, n: int) -> Any:
    """The config of one tensor shard; a clear error when heads, KV heads or the MLP width do not divide."""
    heads, kv, inter = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    for name, value in (("num_attention_heads", heads), ("num_key_value_heads", kv), ("intermediate_size", inter)):
        if value % n:
            raise ConfigError(
                f"config field `{name}` ({value}) must be divisible by the number of ranks ({n}) "
                "for tensor parallelism; use --parallel pipeline or another rank count"
            )
    q = config.quantization
    if q:
        for name, width in (("o_proj", heads * config.head_dim), ("down_proj", inter)):
            if (width // n) % q["group_size"]:
                raise ConfigError(
                    f"{name}: {width // n} input features per rank is not a multiple of the "
                    f"quantization group size {q['group_size']}; use fewer ranks or pipeline mode"
                )
    local = copy.copy(config)  # set, not re-validated: Open-Llama's config would reset the GQA/head_dim fields
    local.head_dim = config.head_dim
    local.num_attention_heads, local.num_key_value_heads, local.intermediate_size = heads // n, kv // n, inter // n
    return local


def pipeline_plan(num_layers: int, rank: int, n: int) -> ParallelPlan:
    """Contiguous stages, as even as possible (the first ranks take one more layer when it does not divide)."""
    if num_layers < n:
        raise ConfigError(
            f"config field `num_hidden_layers` ({num_layers}) is smaller than the number of ranks "
            f"({n}): every pipeline stage needs at least one layer"
        )
    base, extra = divmod(num_layers, n)
    first = rank * base + min(rank, extra)
    return ParallelPlan("pipeline", rank, n, first, first + base + (1 if rank < extra else 0))


def _tensor_axis(name: str) -> int | None:
    """Which axis of a checkpoint tensor this rank takes a part of (None: the whole tensor)."""
    parts = name.split(".")
    if len(parts) < 2:
        return None
    if parts[-2] in COLUMN or parts[0] == "lm_head":
        return 0
    if parts[-2] in ROW and parts[-1] != "bias":
        return 1
    return None


def _pipeline_stubs(model: nn.Module, plan: ParallelPlan, group: mx.distributed.Group) -> None:
    """Before loading: replace what other ranks hold by parameter-free stubs."""
    base, config = model.base_model, model.config
    for i in range(len(base.layers)):
        if plan.owns(i):
            continue
        role = "recv" if i == plan.first - 1 else "send" if i == plan.stop else "pass"
        peer = plan.rank - 1 if role == "recv" else plan.rank + 1
        base.layers[i] = RemoteLayer(role, peer, group)
    last = plan.rank == plan.size - 1
    tied = "lm_head" not in model
    if plan.rank != 0 and not (tied and last):
        base.embed_tokens = StageEmbedding(None, False, False, config.hidden_size, config.vocab_size, group)
    if not tied and not last:
        model.lm_head = StageHead(None, config.vocab_size, group)


def _pipeline_wrap(model: nn.Module, plan: ParallelPlan, group: mx.distributed.Group) -> None:
    """After loading: the kept embedding / head broadcast their logits; stubs learn the compute dtype."""
    base, config = model.base_model, model.config
    last = plan.rank == plan.size - 1
    if not isinstance(base.embed_tokens, StageEmbedding):
        base.embed_tokens = StageEmbedding(
            base.embed_tokens, plan.rank == 0, last, config.hidden_size, config.vocab_size, group
        )
    if "lm_head" in model and not isinstance(model.lm_head, StageHead):
        model.lm_head = StageHead(model.lm_head, config.vocab_size, group)
    base.embed_tokens.dtype = _hidden_dtype(base.embed_tokens, group)

    def make_cache(**options: Any) -> list:
        """The KV caches of this rank's layers (float, rotating or quantized as asked), offsets elsewhere."""
        caches = make_layer_caches(len(base.layers), **options)
        return [cache if plan.owns(i) else OffsetCache() for i, cache in enumerate(caches)]

    model.make_cache = make_cache
    base.make_cache = make_cache  # LlamaModel makes its own caches when called without them


HIDDEN_DTYPES = (mx.float32, mx.float16, mx.bfloat16)


def _hidden_dtype(embedding: StageEmbedding, group: mx.distributed.Group) -> mx.Dtype:
    """The dtype of rank 0's embedded tokens, which every stage receives and passes on."""
    index = 0
    if embedding.lookup:
        index = HIDDEN_DTYPES.index(embedding(mx.zeros((1, 1), mx.int32)).dtype)
    return HIDDEN_DTYPES[int(mx.distributed.all_sum(mx.array(index, dtype=mx.int32), group=group).item())]


def _tensor_head(model: nn.Module, n: int) -> None:
    """Before loading: an untied LM head becomes this rank's vocabulary slice (replicated if it does not divide)."""
    vocab = model.config.vocab_size
    if "lm_head" not in model or vocab % n:
        return
    head = model.lm_head
    model.lm_head = nn.Linear(head.weight.shape[1], vocab // n, bias="bias" in head)


def _tensor_wrap(model: nn.Module, group: mx.distributed.Group) -> None:
    if "lm_head" in model and model.lm_head.weight.shape[0] != model.config.vocab_size:
        model.lm_head = GatherLinear(model.lm_head, group)
    for layer in model.layers:
        layer.self_attn.o_proj = AllSumLinear(layer.self_attn.o_proj, group)
        layer.mlp.down_proj = AllSumLinear(layer.mlp.down_proj, group)


# ---- loading ---------------------------------------------------------------------------------------------


def _elsewhere(key: str, model: nn.Module, plan: ParallelPlan) -> bool:
    """Whether a checkpoint tensor (by model name) belongs to another pipeline stage."""
    parts = key.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return not plan.owns(int(parts[i + 1]))
    return plan.mode == "pipeline" and (parts[-2:-1] == ["embed_tokens"] or parts[0] == "lm_head")


def _read_local(
    model: nn.Module, reader: SlicedReader, names: dict[str, str], plan: ParallelPlan, source: str
) -> dict[str, mx.array]:
    """This rank's tensors, read as slices; an error for checkpoint tensors no rank would take."""
    expected = dict(tree_flatten(model.parameters()))
    stray = sorted(k for k in names if k not in expected and not _elsewhere(k, model, plan))
    if stray:
        raise CheckpointError(f"{source}: unexpected tensor(s) {', '.join(stray[:5])} for {type(model).__name__}")
    weights = {}
    for key in expected:
        if key not in names:
            continue  # load_checked names what is missing
        axis = _tensor_axis(key) if plan.mode == "tensor" and plan.size > 1 else None
        full = reader.entry(names[key]).shape
        if axis is None or axis >= len(full) or full[axis] == expected[key].shape[axis]:  # replicated
            weights[key] = reader.read(names[key])
        else:
            start, stop = reader.part_range(names[key], axis, plan.rank, plan.size)
            weights[key] = reader.read(names[key], axis, start, stop)
    return weights


def share_seed(group: mx.distributed.Group) -> None:
    """Seed MLX's global random state identically on every rank, so unseeded sampling agrees too."""
    if group.size() == 1:
        return
    seed = secrets.randbits(31) if group.rank() == 0 else 0
    mx.random.seed(int(mx.distributed.all_sum(mx.array(seed, dtype=mx.int32), group=group).item()))


def _local_model(cls: type, config: Any, mode: str, group: mx.distributed.Group) -> tuple[nn.Module, ParallelPlan]:
    """The (not yet loaded) model this rank builds, and its plan."""
    rank, n = group.rank(), group.size()
    if mode == "tensor":
        model = cls(tensor_config(config, n))
        _tensor_head(model, n)
        return model, ParallelPlan("tensor", rank, n)
    model = cls(config)
    if "lm_head" not in model and not model.output_embedding_shared():
        raise ConfigError(f"parallel='pipeline' needs a causal-LM checkpoint; {cls.__name__} has another head")
    return model, pipeline_plan(config.num_hidden_layers, rank, n)


def load_parallel(
    cls: type, path: str | Path, mode: str, dtype: Any = None, group: mx.distributed.Group | None = None
) -> nn.Module:
    """This rank's part of a `cls` model from the directory `path`, split by `mode` across `group`.

    As `from_pretrained` (same dtype rules, strict names and shapes), but only this rank's tensors are read.
    `group=None` initialises the default `mx.distributed` group (a single process is a group of one).
    """
    if mode not in MODES:
        raise ConfigError(f"parallel={mode!r}: expected one of {', '.join(MODES)}")
    requested = requested_dtype(dtype, None)
    group = mx.distributed.init() if group is None else group
    path = Path(path)
    config = cls.config_class.from_pretrained(path)
    reader = SlicedReader(checkpoint_files(path))
    check_layer_count(reader.keys(), config.num_hidden_layers, str(path))  # before building any layer
    model, plan = _local_model(cls, config, mode, group)
    names = model.sanitize({k: k for k in reader.keys()})  # model name -> checkpoint name
    if mode == "pipeline":
        _pipeline_stubs(model, plan, group)
    if config.quantization:
        q = config.quantization
        quantize_model(model, q["group_size"], q["bits"], lambda p, m: f"{p}.scales" in names, cpu=is_cpu_backend())
    weights = _read_local(model, reader, names, plan, str(path))
    plan.bytes_read = reader.bytes_read
    target = model._compute_dtype(weights, auto_dtype(config, weights) if requested == "auto" else requested)
    model.load_checked({k: _to_compute_dtype(k, v, target) for k, v in weights.items()}, str(path))
    mx.eval(model.parameters())
    model.config = config  # the full model's config, as the user expects (layers read theirs at build time)
    model.base_model.config = config
    if target is not None:
        config.torch_dtype = dtype_name(target)
    if mode == "tensor":
        _tensor_wrap(model, group)
    else:
        _pipeline_wrap(model, plan, group)
    model.parallel, model.parallel_group = plan, group
    model.eval()
    model.generation_config = GenerationConfig.for_checkpoint(path, config)
    share_seed(group)
    return model


# ---- rank 0 talks to the user ----------------------------------------------------------------------------


def broadcast_text(text: str | None, group: mx.distributed.Group | None = None) -> str | None:
    """Rank 0's text (None: end of input) on every rank; what the other ranks pass is ignored."""
    group = mx.distributed.init() if group is None else group
    main = group.rank() == 0
    data = (text or "").encode() if main else b""
    size = len(data) + 1 if main and text is not None else 0  # 0 encodes None
    size = int(mx.distributed.all_sum(mx.array(size, dtype=mx.int32), group=group).item())
    if size == 0:
        return None
    buffer = np.zeros(size - 1, dtype=np.uint8)
    if main:
        buffer[:] = np.frombuffer(data, dtype=np.uint8)
    if size == 1:
        return ""
    out = mx.distributed.all_sum(mx.array(buffer), group=group)
    return bytes(np.array(out, dtype=np.uint8)).decode()


def rank0_lines(lines: Iterator[str], group: mx.distributed.Group | None = None) -> Iterator[str]:
    """The lines rank 0 reads (only rank 0 advances `lines`), on every rank, until rank 0's input ends."""
    group = mx.distributed.init() if group is None else group
    while True:
        line = broadcast_text(next(lines, None) if group.rank() == 0 else None, group)
        if line is None:
            return
        yield line


def is_main_rank() -> bool:
    """Whether this process is rank 0 of the default group (the one that prints)."""
    return mx.distributed.init().rank() == 0
