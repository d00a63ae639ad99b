"""`mlx-llama lora` and `mlx-llama fuse`: parsers and handlers (wired into mlx_llama.cli).

Reports (training/validation loss, tokens/s, peak memory) are lines on stdout; the progress bar is drawn
on stderr only when it is a terminal, and --quiet silences both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import MlxLlamaError

TASKS = ("causal-lm", "sequence-classification", "token-classification", "question-answering")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `lora` and `fuse` subcommands."""
    p = sub.add_parser("lora", help="fine-tune with LoRA / QLoRA / DoRA (or full); saves a PEFT-format adapter")
    p.add_argument("--model", help="base model directory or Hub id (default: the bundled demo model)")
    p.add_argument("--data", required=True, help="directory with train.jsonl (and valid.jsonl)")
    p.add_argument("--adapter-path", default="adapters", help="where the adapter is written (default ./adapters)")
    p.add_argument("--task", choices=TASKS, default="causal-lm", help="the head and its loss (default causal-lm)")
    p.add_argument("--fine-tune-type", choices=("lora", "dora", "full"), default="lora")
    p.add_argument("--iters", type=int, default=100, help="training steps (default 100)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (default 8)")
    p.add_argument("--alpha", type=float, default=16, help="LoRA alpha; the scale is alpha/r (default 16)")
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    p.add_argument("--use-rslora", action="store_true", help="scale by alpha/sqrt(r) (rank-stabilised LoRA)")
    p.add_argument("--bias", choices=("none", "all", "lora_only"), default="none", help="which biases train")
    p.add_argument("--target-modules", default="q_proj,v_proj", help="comma-separated names, or all-linear")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    p.add_argument("--mask-prompt", action="store_true", help="score only the completion / last assistant turn")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute activations to save memory")
    p.add_argument("--max-seq-length", type=int, default=2048, help="truncate longer examples (default 2048)")
    p.add_argument("--num-labels", type=int, help="classification labels (default: from the data)")
    p.add_argument("--steps-per-report", type=int, default=10)
    p.add_argument("--steps-per-eval", type=int, default=50)
    p.add_argument("--val-batches", type=int, default=-1, help="validation batches; -1 = all (default)")
    p.add_argument("--save-every", type=int, default=0, help="also save the adapter every N steps")
    p.add_argument("--resume-adapter-file", help="start from this adapter (directory or adapter_model.safetensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no reports or progress")

    f = sub.add_parser("fuse", help="merge a LoRA adapter into its base model (a plain Transformers directory)")
    f.add_argument("--model", help="base model directory or Hub id (default: the bundled demo model)")
    f.add_argument("--adapter-path", default="adapters", help="the PEFT-format adapter directory")
    f.add_argument("--save-path", default="fused_model", help="output directory (default ./fused_model)")
    f.add_argument("--dequantize", action="store_true", help="write float weights for a quantized base")
    f.add_argument("--dtype", help="output dtype (default: the base checkpoint's)")


def _model_path(args: argparse.Namespace) -> Path:
    from ..loading import DEMO_MODEL, resolve_model_path

    return resolve_model_path(args.model) if args.model else DEMO_MODEL


def _check(args: argparse.Namespace) -> None:
    for flag in ("iters", "batch_size", "rank", "steps_per_report", "steps_per_eval", "max_seq_length"):
        if getattr(args, flag) < 1:
            raise MlxLlamaError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.learning_rate <= 0:
        raise MlxLlamaError(f"--learning-rate must be positive, got {args.learning_rate}")


def _label_overrides(args: argparse.Namespace) -> dict:
    """num_labels / id2label for a classification head, from --num-labels or the training labels."""
    from .data import read_jsonl

    if args.task not in ("sequence-classification", "token-classification"):
        return {}
    rows = read_jsonl(Path(args.data) / "train.jsonl")
    key = "label" if args.task == "sequence-classification" else "labels"
    values = [v for r in rows for v in (r.get(key) if isinstance(r.get(key), list) else [r.get(key)])]
    if all(isinstance(v, int) for v in values):
        n = args.num_labels or max(values) + 1
        return {"num_labels": n}
    names = sorted({str(v) for v in values})
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _printer(args: argparse.Namespace):
    def report(r: dict) -> None:
        if args.quiet:
            return
        if "val_loss" in r:
            line = f"iter {r['iter']}: val loss {r['val_loss']:.4f}"
        else:
            line = (
                f"iter {r['iter']}: train loss {r['train_loss']:.4f}, lr {r['learning_rate']:.3g}, "
                f"{r['tokens_per_s']:.1f} tokens/s, peak memory {r['peak_memory_gb']:.3f} GB"
            )
        if sys.stderr.isatty():
            print("\r\033[K", end="", file=sys.stderr)
        print(line, flush=True)

    return report


def _progress(args: argparse.Namespace):
    if args.quiet or not sys.stderr.isatty():
        return None

    def show(it: int) -> None:
        done = int(30 * it / args.iters)
        end = "\n" if it == args.iters else ""
        print(f"\r[{'#' * done}{'.' * (30 - done)}] {it}/{args.iters}", end=end, file=sys.stderr, flush=True)

    return show


def run_lora(args: argparse.Namespace) -> None:
    _check(args)
    from ..loading import load_tokenizer
    from .adapter_io import head_class
    from .config import LoraConfig
    from .trainer import TrainingArgs
    from .tuning import TASK_INFO, finetune

    path = _model_path(args)
    model = head_class(path, TASK_INFO[args.task][1]).from_pretrained(path, **_label_overrides(args))
    tokenizer = load_tokenizer(path)
    targets = [t.strip() for t in args.target_modules.split(",") if t.strip()]
    config = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        lora_dropout=args.dropout,
        bias=args.bias,
        use_rslora=args.use_rslora,
        base_model_name_or_path=str(args.model) if args.model else None,
    )
    targs = TrainingArgs(
        iters=args.iters,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule,
        warmup=args.warmup,
        steps_per_report=args.steps_per_report,
        steps_per_eval=args.steps_per_eval,
        val_batches=args.val_batches,
        grad_checkpoint=args.grad_checkpoint,
        seed=args.seed,
    )
    finetune(
        model,
        tokenizer,
        args.data,
        args.adapter_path,
        config,
        targs,
        task=args.task,
        fine_tune_type=args.fine_tune_type,
        mask_prompt=args.mask_prompt,
        max_seq_length=args.max_seq_length,
        resume=args.resume_adapter_file,
        save_every=args.save_every,
        report=_printer(args),
        on_step=_progress(args),
    )
    if not args.quiet:
        print(f"adapter saved to {args.adapter_path}", file=sys.stderr)


def run_fuse(args: argparse.Namespace) -> None:
    from .fuse import fuse

    out = fuse(_model_path(args), args.adapter_path, args.save_path, dequantize=args.dequantize, dtype=args.dtype)
    print(f"fused model saved to {out}", file=sys.stderr)
