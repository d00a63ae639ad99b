"""The training loop: the model's own loss, mlx.optimizers with warm-up + cosine, optional gradient checkpointing.

One step is compiled (`mx.compile`) with the model, optimizer and random state as its state. Reports (loss,
learning rate, tokens/s, peak memory) go to a callback; the CLI prints them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from ..errors import MlxLlamaError
from ..token_ids import check_ids, trusted_ids
from .data import Example, iterate_batches


@dataclass
class TrainingArgs:
    """Optimisation settings (defaults: AdamW, constant rate, no warm-up)."""

    iters: int = 100
    batch_size: int = 4
    learning_rate: float = 1e-4
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup: int = 0
    min_learning_rate: float = 0.0
    steps_per_report: int = 10
    steps_per_eval: int = 50
    val_batches: int = -1
    grad_checkpoint: bool = False
    seed: int = 0
    compile: bool = False


def learning_rate_schedule(args: TrainingArgs) -> Callable[[mx.array], mx.array] | float:
    """Linear warm-up from 0, then constant or cosine decay to `min_learning_rate` (mlx.optimizers schedules)."""
    if args.lr_schedule not in ("constant", "cosine"):
        raise MlxLlamaError(f"--lr-schedule must be constant or cosine, got {args.lr_schedule!r}")
    if args.lr_schedule == "cosine":
        main = optim.cosine_decay(args.learning_rate, max(args.iters - args.warmup, 1), args.min_learning_rate)
    else:
        main = (lambda step: mx.array(args.learning_rate)) if args.warmup else args.learning_rate
    if not args.warmup:
        return main
    warm = optim.linear_schedule(0.0, args.learning_rate, args.warmup)
    return optim.join_schedules([warm, main], [args.warmup])


def make_optimizer(args: TrainingArgs) -> optim.Optimizer:
    lr = learning_rate_schedule(args)
    if args.optimizer == "adamw":
        return optim.AdamW(learning_rate=lr, weight_decay=args.weight_decay)
    if args.optimizer == "sgd":
        return optim.SGD(learning_rate=lr, weight_decay=args.weight_decay)
    raise MlxLlamaError(f"--optimizer must be adamw or sgd, got {args.optimizer!r}")


def enable_grad_checkpoint(model: nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (`mx.checkpoint`) instead of storing them."""
    for layer in model.layers:
        cls = type(layer)
        if getattr(cls, "_checkpointed", False):
            continue
        layer.__class__ = type(
            "Checkpointed" + cls.__name__, (cls,), {"__call__": _checkpointed_call, "_checkpointed": True}
        )


def _checkpointed_call(self: nn.Module, x: mx.array, *args: Any, **kwargs: Any):
    plain = type(self).__mro__[1].__call__
    cache = args[2] if len(args) > 2 else kwargs.get("cache")
    if cache is not None or not self.training:  # recomputing would append to the KV cache a second time
        return plain(self, x, *args, **kwargs)

    def inner(params: dict, h: mx.array) -> mx.array:
        self.update(params)
        return plain(self, h, *args, **kwargs)[0]

    return mx.checkpoint(inner)(self.trainable_parameters(), x), None


def loss_of(model: nn.Module, batch: dict[str, mx.array]) -> mx.array:
    """The head's own loss (shifted LM loss, classification, token or span loss); no KV cache in training."""
    if "labels" in batch and "token" not in type(model).__name__.lower():
        return model(**batch, use_cache=False).loss
    return model(**batch).loss


def evaluate(
    model: nn.Module, examples: list[Example], batch_size: int, task: str, pad_id: int, max_batches: int = -1
) -> float:
    """Mean loss over validation batches, weighted by real tokens (eval mode: no dropout)."""
    was_training = model.training
    model.eval()
    total, weight = 0.0, 0
    for n, (batch, tokens) in enumerate(iterate_batches(examples, batch_size, task, pad_id, shuffle=False)):
        if 0 <= max_batches <= n:
            break
        total += loss_of(model, batch).item() * tokens
        weight += tokens
    model.train(was_training)
    return total / max(weight, 1)


def _make_step(model: nn.Module, optimizer, compile_step: bool):
    """One optimizer step on a batch (compiled when asked), and the state it updates (for `mx.eval`)."""
    loss_and_grad = nn.value_and_grad(model, loss_of)
    state = [model.state, optimizer.state, mx.random.state]

    def step(batch: dict[str, mx.array]) -> mx.array:
        loss, grads = loss_and_grad(model, batch)
        optimizer.update(model, grads)
        return loss

    if not compile_step:
        return step, state
    compiled = partial(mx.compile, inputs=state, outputs=state)(step)
    vocab_size = model.config.vocab_size

    def checked_step(batch: dict[str, mx.array]) -> mx.array:
        """Ids are checked here, outside the trace: a compiled step cannot read them back."""
        check_ids(batch["input_ids"], vocab_size)
        with trusted_ids():
            return compiled(batch)

    return checked_step, state


def _train_report(it: int, losses: list[float], learning_rate: float, tokens: int, busy: float) -> dict:
    return {
        "iter": it,
        "train_loss": sum(losses) / len(losses),
        "learning_rate": learning_rate,
        "tokens_per_s": tokens / busy,
        "tokens": tokens,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
    }


def train(
    model: nn.Module,
    train_set: list[Example],
    valid_set: list[Example] | None,
    args: TrainingArgs,
    task: str,
    pad_id: int,
    report: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> list[dict]:
    """Run `args.iters` steps on the trainable parameters; returns the reports (train and validation)."""
    if not tree_flatten(model.trainable_parameters()):
        raise MlxLlamaError("nothing to train: every parameter is frozen")
    if args.grad_checkpoint:
        enable_grad_checkpoint(model)
    mx.random.seed(args.seed)
    optimizer = make_optimizer(args)
    step, state = _make_step(model, optimizer, args.compile)
    history: list[dict] = []
    emit = report or (lambda r: None)

    def validate(it: int) -> None:
        if valid_set:
            r = {"iter": it, "val_loss": evaluate(model, valid_set, args.batch_size, task, pad_id, args.val_batches)}
            history.append(r)
            emit(r)

    model.train()
    validate(0)
    losses, tokens, busy = [], 0, 0.0
    mx.reset_peak_memory()
    batches = iterate_batches(train_set, args.batch_size, task, pad_id, shuffle=True, seed=args.seed)
    for it in range(1, args.iters + 1):
        batch, n_tokens = next(batches)
        start = time.perf_counter()
        loss = step(batch)
        mx.eval(state, loss)
        busy += time.perf_counter() - start
        losses.append(loss.item())
        tokens += n_tokens
        if it % args.steps_per_report == 0 or it == args.iters:
            r = _train_report(it, losses, float(optimizer.learning_rate), tokens, busy)
            history.append(r)
            emit(r)
            losses, tokens, busy = [], 0, 0.0
        if it % args.steps_per_eval == 0 and it != args.iters:
            validate(it)
        if on_checkpoint is not None:
            on_checkpoint(it)
    validate(args.iters)
    model.eval()
    return history
