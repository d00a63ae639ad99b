"""`mlx-llama generate | chat | serve | convert`: the command line.

Generated text goes to stdout; notices, progress and statistics go to stderr, so output can be piped.
Errors a user can cause (bad arguments, a missing model) are one line on stderr and exit status 2.
Sampling defaults follow mlx-lm's CLI (--temp 0 is greedy; top-k, top-p and min-p are off unless set), except
that a checkpoint whose generation_config.json samples (Llama 3 Instruct) is sampled with its settings, as
Transformers does; its eos ids (e.g. <|eot_id|>) always end the answer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import cli_decoding
from .errors import MlxLlamaError

DEMO_NOTICE = (
    "Using the bundled demo model: a tiny Llama trained on a small English text, so expect simple text. "
    "For a real model pass --model with a Hugging Face Hub id "
    "(e.g. --model TinyLlama/TinyLlama-1.1B-Chat-v1.0) or a directory made by `mlx-llama convert`."
)
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (not usage + error) and exits 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model directory or Hugging Face Hub id (default: the bundled demo model)")
    p.add_argument("--dtype", help="compute dtype: float32, float16 or bfloat16 (default: the model's)")
    # Unset length/sampling flags take the checkpoint's generation_config.json (see _generation_defaults).
    p.add_argument("--max-tokens", type=int, help="most new tokens per answer (default: max_new_tokens or 256)")
    p.add_argument("--temp", type=float, help="sampling temperature; 0 = greedy (default, unless the model samples)")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 = off (default)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass; 1 = off (default)")
    p.add_argument("--min-p", type=float, default=0.0, help="min probability relative to the top; 0 = off")
    p.add_argument("--repetition-penalty", type=float, help="CTRL penalty; 1 = off (default)")
    p.add_argument("--seed", type=int, help="random seed, for repeatable sampling")
    p.add_argument("--system", help="system prompt (with a chat format)")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--prefill-step-size", type=int, default=512, help="prompt tokens per prefill chunk")
    p.add_argument(
        "--allow-long-prompt",
        action="store_true",
        help="run prompts longer than the model's max_position_embeddings (slow, degraded output)",
    )
    p.add_argument("--quiet", action="store_true", help="no notices, progress or statistics on stderr")
    p.add_argument(
        "--parallel",
        choices=("tensor", "pipeline"),
        help="split the model over the ranks started by mlx.launch; rank 0 reads input and prints",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; `convert`'s own options are added only when that command is asked for (lazy import)."""
    parser = _Parser(prog="mlx-llama", description="LLaMA-family models on MLX, with the Transformers API.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="generate text from a prompt, streamed to stdout")
    _add_model_args(gen)
    gen.add_argument("--prompt", required=True, help="the prompt text, or - to read it from stdin")
    gen.add_argument("--no-chat-template", action="store_true", help="use the prompt as raw text")
    cli_decoding.add_decoding_args(gen)
    cli_decoding.add_parsers(sub, _add_model_args)

    chat = sub.add_parser("chat", help="multi-turn chat on stdin/stdout (the KV cache is kept between turns)")
    _add_model_args(chat)

    from .server.cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    conv = sub.add_parser("convert", help="convert a checkpoint (Meta, Transformers) to an MLX directory")
    if argv and argv[0] == "convert":
        from .convert import add_arguments

        add_arguments(conv)
    from .lora.cli import add_parsers as add_lora_parsers

    add_lora_parsers(sub)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.max_tokens is not None and args.max_tokens < 1:
        raise MlxLlamaError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.prefill_step_size < 1:
        raise MlxLlamaError(f"--prefill-step-size must be at least 1, got {args.prefill_step_size}")
    if args.temp is not None and args.temp < 0:
        raise MlxLlamaError(f"--temp must be >= 0, got {args.temp}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise MlxLlamaError(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    if args.parallel:
        from .parallel import is_main_rank

        if not is_main_rank():  # the other ranks compute the same tokens silently
            sys.stdout, args.quiet = open(os.devnull, "w"), True


def _decode_stdin(data: bytes | str, where: str) -> str:
    """Bytes read from stdin as text, or a one-line error for bytes that are not UTF-8."""
    if isinstance(data, str):  # a text stream without a byte buffer (tests, embedding applications)
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MlxLlamaError(
            f"{where} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _stdin():
    """stdin's byte stream where it has one, else the text stream."""
    return getattr(sys.stdin, "buffer", sys.stdin)


def _generation_defaults(args: argparse.Namespace, model) -> None:
    """Fill unset flags from the checkpoint's generation config (its sampling settings when it samples, its
    max_new_tokens); without one: greedy, 256 tokens."""
    from .generation.config import sampling_defaults

    config = getattr(model, "generation_config", None)
    defaults = sampling_defaults(config)
    for flag, key in (("temp", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"),
                      ("repetition_penalty", "repetition_penalty")):  # fmt: skip
        if getattr(args, flag) is None:
            setattr(args, flag, defaults[key])
    if args.max_tokens is None:
        args.max_tokens = getattr(config, "max_new_tokens", None) or 256


def _load(args: argparse.Namespace):
    from .loading import DEMO_MODEL, load

    if args.model is None:
        if not (DEMO_MODEL / "config.json").is_file():
            raise MlxLlamaError(f"no --model given and the bundled demo model is missing from {DEMO_MODEL}")
        if not args.quiet:
            print(DEMO_NOTICE, file=sys.stderr)
        return load(DEMO_MODEL, dtype=args.dtype, parallel=args.parallel)
    return load(args.model, dtype=args.dtype, parallel=args.parallel)


def _has_chat_format(tokenizer) -> bool:
    """Whether the checkpoint ships a chat template (Llama 2 chat); base models have none."""
    return bool(getattr(tokenizer, "has_chat_template", False))


def _progress(args: argparse.Namespace):
    """Prefill progress on an interactive stderr only, for prompts longer than one chunk."""
    if args.quiet or not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        if total <= args.prefill_step_size:
            return
        end = "\n" if done >= total else ""
        print(f"\rprefill: {done}/{total} tokens", end=end, file=sys.stderr, flush=True)

    return show


def _sampling(args: argparse.Namespace) -> dict:
    return {
        "temperature": args.temp,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": args.stop,
        "prefill_step_size": args.prefill_step_size,
        "progress": _progress(args),
    }


def _stream(model, tokenizer, prompt, args: argparse.Namespace, cache=None, stop=None):
    """Print a generation to stdout as it comes; return (text, generated ids, last response)."""
    import warnings

    from .generation.api import _encode_prompt, _vocab_size, check_prompt_length, stream_generate

    _generation_defaults(args, model)
    kwargs = {**_sampling(args), **cli_decoding.decoding_kwargs(args)}
    if stop is not None:
        kwargs["stop"] = stop
    prompt = _encode_prompt(tokenizer, prompt, _vocab_size(model))
    too_long = check_prompt_length(model, len(prompt), cache[0].offset if cache else 0)
    if too_long and not args.allow_long_prompt:
        raise MlxLlamaError(f"{too_long}; pass --allow-long-prompt to run it anyway")
    if too_long and not args.quiet:
        print(f"warning: {too_long}", file=sys.stderr)
    parts, ids, last, drafted = [], [], None, []
    with warnings.catch_warnings():
        if too_long:  # allowed with --allow-long-prompt: no second notice from the API
            warnings.simplefilter("ignore")
        for last in stream_generate(model, tokenizer, prompt, args.max_tokens, cache=cache, **kwargs):
            ids.append(last.token)
            drafted.append(last.from_draft)
            if last.text:
                print(last.text, end="", flush=True)
                parts.append(last.text)
    print(flush=True)
    if kwargs.keys() & {"draft_model", "prompt_lookup"} and not args.quiet:
        print(cli_decoding.draft_summary(drafted), file=sys.stderr)
    return "".join(parts), ids, last


def _print_stats(last, args: argparse.Namespace) -> None:
    from .generation.api import format_stats

    if last is not None and not args.quiet:
        print(format_stats(last), file=sys.stderr)


def run_generate(args: argparse.Namespace) -> None:
    _check_args(args)
    if args.parallel and args.prompt == "-":
        from .parallel import broadcast_text, is_main_rank

        text = broadcast_text(_decode_stdin(_stdin().read(), "stdin") if is_main_rank() else None)
    else:
        text = _decode_stdin(_stdin().read(), "stdin") if args.prompt == "-" else args.prompt
    if not text.strip():
        raise MlxLlamaError("the prompt is empty" + (" (nothing on stdin)" if args.prompt == "-" else ""))
    model, tokenizer = _load(args)
    cache, _ = cli_decoding.prepare(args, model)
    if cache is not None:  # the text continues the cached prompt: no BOS, no chat template
        prompt = list(tokenizer.encode(text, add_special_tokens=False))
    elif _has_chat_format(tokenizer) and not args.no_chat_template:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": text}
        ]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    else:
        if args.system:
            text = f"{args.system}\n\n{text}"
        prompt = text
    _, _, last = _stream(model, tokenizer, prompt, args, cache=cache)
    _print_stats(last, args)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# Base models chat in the tokenizer's plain format ("User: ...\nAssistant:"); stop where they start the next turn.
PLAIN_CHAT_STOPS = ["\nUser:"]


class ChatSession:
    """A conversation whose KV cache survives between turns: each turn feeds only the tokens the cache lacks.

    The whole conversation is re-rendered with the tokenizer's chat format each turn; the cache is
    trimmed back to the longest prefix it shares with that rendering (a re-tokenized answer can differ
    from the sampled ids at its edges) and only the rest is prefilled.
    """

    def __init__(self, model, tokenizer, system: str | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.stops = [] if _has_chat_format(tokenizer) else PLAIN_CHAT_STOPS
        self.system = system
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        self.cache = self.model.make_cache()
        self.cached: list[int] = []  # the ids whose keys/values are in the cache, in order

    def prepare(self, user: str) -> tuple[list[int], int]:
        """Trim the cache to the prefix it shares with the conversation; return (all ids, cached count)."""
        messages = self.messages + [{"role": "user", "content": user}]
        full = list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        keep = min(_common_prefix(self.cached, full), len(full) - 1)  # feed at least one token
        for layer in self.cache:
            layer.trim(len(self.cached) - keep)
        self.cached = full[:keep]
        return full, keep

    def turn(self, user: str, args: argparse.Namespace):
        """Answer one user message (streamed to stdout); return the last GenerationResponse."""
        full, start = self.prepare(user)
        stops = (args.stop or []) + self.stops
        text, ids, last = _stream(self.model, self.tokenizer, full[start:], args, cache=self.cache, stop=stops)
        self.cached = (full + ids)[: self.cache[0].offset]
        self.messages += [{"role": "user", "content": user}, {"role": "assistant", "content": text.strip()}]
        return last


def _read_lines():
    """User messages: an interactive prompt on a terminal, plain lines from a pipe."""
    interactive = sys.stdin.isatty()
    number = 0
    while True:
        number += 1
        try:
            line = input("> ") if interactive else _decode_stdin(_stdin().readline(), f"stdin line {number}")
        except EOFError:
            return
        except UnicodeDecodeError:
            raise MlxLlamaError(f"stdin line {number} is not valid UTF-8") from None
        if not interactive and line == "":
            return
        yield line.rstrip("\n")


def run_chat(args: argparse.Namespace) -> None:
    _check_args(args)
    model, tokenizer = _load(args)
    session = ChatSession(model, tokenizer, args.system)
    if not args.quiet:
        kind = "its chat template" if not session.stops else "the plain 'User:/Assistant:' format (no chat template)"
        print(f"Chat using {kind}. /reset starts over; /quit or end of input leaves.", file=sys.stderr)
    lines = _read_lines()
    if args.parallel:
        from .parallel import rank0_lines

        lines = rank0_lines(lines)
    for line in lines:
        message = line.strip()
        if not message:
            continue
        if message in ("/quit", "/exit"):
            break
        if message == "/reset":
            session.reset()
            continue
        last = session.turn(message, args)
        _print_stats(last, args)


def run_convert(args: argparse.Namespace) -> None:
    from .convert import run

    run(args)


def run_serve(args: argparse.Namespace) -> None:
    from .server.cli import run

    run(args)


def run_lora(args: argparse.Namespace) -> None:
    from .lora.cli import run_fuse, run_lora

    (run_lora if args.command == "lora" else run_fuse)(args)


COMMANDS = {
    "generate": run_generate,
    "chat": run_chat,
    "convert": run_convert,
    "lora": run_lora,
    "fuse": run_lora,
    "serve": run_serve,
    "cache-prompt": lambda a: cli_decoding.run_cache_prompt(a, _load),
    "perplexity": lambda a: cli_decoding.run_perplexity(a, _load),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mlx-llama` and `python -m mlx_llama`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except MlxLlamaError as e:
        print(f"mlx-llama: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
