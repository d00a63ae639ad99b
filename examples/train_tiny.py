"""Train the bundled demo model (`mlx_llama/assets/demo/`) from scratch on Jane Austen's six novels.

Why this exists: the CLI needs a model that works offline on first use. This script rebuilds it end to end
with MLX and our own `LlamaForCausalLM` loss, so anyone can check or redo it.

Corpus: Debian's `r-cran-janeaustenr` package (MIT licence; the novels themselves are public domain, from
Project Gutenberg). R need not be installed: the script reads the package's R data file directly.

    apt-get download r-cran-janeaustenr          # any directory; or `apt-get install r-cran-janeaustenr`
    python examples/train_tiny.py --corpus r-cran-janeaustenr_*.deb

`--corpus` takes the .deb, a directory it was unpacked into, or an installed R library; without it the
usual install locations are searched. Run time: about 19 minutes on 2 idle CPU cores (see the model card).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import re
import struct
import sys
import tarfile
import tempfile
import time
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from mlx_llama import LlamaConfig, LlamaForCausalLM  # first: it sets up the BLAS before MLX loads
from mlx_llama.token_ids import trusted_ids
from mlx_llama.tokenizer import LlamaTokenizer

# isort: split
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "mlx_llama" / "assets" / "demo"
DATA_SUBDIR = Path("usr/lib/R/site-library/janeaustenr/data")  # inside the .deb
INSTALLED = [Path("/usr/lib/R/site-library/janeaustenr/data"), Path("/usr/local/lib/R/site-library/janeaustenr/data")]
BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
GET_IT = "get it with `apt-get download r-cran-janeaustenr` and pass the .deb with --corpus"


# ---- reading the corpus: R's lazy-load database (Rdata.rdx index + Rdata.rdb blobs), XDR serialization ----


class _RReader:
    """Just enough of R's serialization format for character vectors, lists and pairlists."""

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR serialization")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        self.pos += 8  # the writer's and the oldest reader's R versions
        if version == 3:
            skip = self.int()  # the native encoding's name: length, then bytes
            self.pos += skip

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 242, 253, 251):  # NULL, empty/global env, missing arg
            return None
        if kind == 255:  # reference to an earlier symbol
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # symbol: a CHARSXP follows
            name = self.item()
            self.refs.append(name)
            return name
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            text = self.data[self.pos : self.pos + n].decode("utf-8", "replace")
            self.pos += n
            return text
        if kind == 2:  # pairlist node: [attr] [tag] car cdr
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            out = {tag: self.item()}
            rest = self.item()
            if isinstance(rest, dict):
                out.update(rest)
            return out
        if kind in (16, 19):  # character vector, generic vector
            value = [self.item() for _ in range(self.int())]
        elif kind in (10, 13):  # logical, integer
            n = self.int()
            value = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == 14:  # double
            n = self.int()
            value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        else:
            raise ValueError(f"R type {kind} is not supported by this reader")
        if has_attr:
            attrs = self.item()
            if kind == 19 and isinstance(attrs, dict) and "names" in attrs:
                return dict(zip(attrs["names"], value, strict=True))
        return value


def _unpack_blob(blob: bytes) -> bytes:
    """A lazy-load record: 4-byte big-endian length, then a zlib stream."""
    (n,) = struct.unpack_from(">I", blob)
    return zlib.decompress(blob[4:])[:n]


def read_books(data_dir: Path) -> dict[str, list[str]]:
    """The six novels as lists of lines, read from the package's `data/Rdata.rdx` and `Rdata.rdb`."""
    index = _RReader(gzip.decompress((data_dir / "Rdata.rdx").read_bytes())).item()
    db = (data_dir / "Rdata.rdb").read_bytes()
    books = {}
    for name in BOOKS:
        offset, length = index["variables"][name]
        books[name] = _RReader(_unpack_blob(db[offset : offset + length])).item()
    return books


def unpack_deb(deb: Path, into: Path) -> Path:
    """Extract a .deb's data.tar.* (an `ar` archive member) without dpkg."""
    raw = deb.read_bytes()
    if raw[:8] != b"!<arch>\n":
        raise SystemExit(f"{deb}: not a .deb (ar) archive; {GET_IT}")
    pos = 8
    while pos + 60 <= len(raw):
        name, size = raw[pos : pos + 16].decode().strip().rstrip("/"), int(raw[pos + 48 : pos + 58].decode().strip())
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(raw[pos + 60 : pos + 60 + size])) as tar:
                tar.extractall(into, filter="data")
            return into / DATA_SUBDIR
        pos += 60 + size + size % 2
    raise SystemExit(f"{deb}: no data.tar member; {GET_IT}")


def find_corpus(arg: str | None, scratch: Path) -> Path:
    """The janeaustenr `data` directory from --corpus (a .deb, an unpacked tree, an R library) or the system."""
    candidates = []
    if arg:
        path = Path(arg).expanduser()
        if path.is_file():
            return unpack_deb(path, scratch)
        candidates = [path, path / "janeaustenr" / "data", path / "data", path / DATA_SUBDIR]
    else:
        candidates = INSTALLED + sorted(Path.cwd().glob("r-cran-janeaustenr_*.deb"))
    for cand in candidates:
        if cand.is_file() and cand.suffix == ".deb":
            return unpack_deb(cand, scratch)
        if (cand / "Rdata.rdx").is_file():
            return cand
    raise SystemExit(f"Jane Austen corpus not found ({arg or 'searched ' + ', '.join(map(str, candidates))}); {GET_IT}")


def paragraphs(lines: list[str]) -> list[str]:
    """Join wrapped lines into paragraphs; drop headings (no lower-case letters, or CHAPTER/VOLUME lines)."""
    out, current = [], []
    for line in [*lines, ""]:
        line = (line or "").strip()
        if line:
            current.append(line)
            continue
        if current:
            text = re.sub(r"\s+", " ", " ".join(current)).replace("_", "")
            if re.search(r"[a-z]", text) and not re.match(r"(chapter|volume)\b", text, re.I):
                out.append(text)
            current = []
    return out


# ---- tokenizer -----------------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int, prefix: Path) -> Path:
    """SentencePiece BPE with LLaMA's trainer options (byte fallback, split digits, identity normalisation)."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        split_by_number=True,
        split_by_whitespace=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_surface=" \u2047 ",
        max_sentence_length=1 << 16,
        num_threads=2,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def token_stream(tok: LlamaTokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`<s> paragraph </s>` for every paragraph, concatenated; plus where each paragraph starts."""
    ids, starts = [], []
    for piece_ids in tok.sp_model.encode(texts):
        starts.append(len(ids))
        ids.extend([1, *piece_ids, 2])
    return np.array(ids, dtype=np.int32), np.array(starts, dtype=np.int64)


# ---- training ------------------------------------------------------------------------------------------------


def batches(stream: np.ndarray, starts: np.ndarray, batch: int, context: int, rng: np.random.Generator):
    """Endless random windows that start at a paragraph's `<s>`, as generation starts."""
    starts = starts[starts + context <= len(stream)]
    while True:
        picks = rng.choice(starts, size=batch)
        yield mx.array(np.stack([stream[s : s + context] for s in picks]))


def evaluate(model: LlamaForCausalLM, stream: np.ndarray, context: int, batch: int = 8) -> float:
    """Mean next-token loss over consecutive held-out windows."""
    n = len(stream) // context
    windows = stream[: n * context].reshape(n, context)
    losses = [
        model(mx.array(windows[i : i + batch]), labels=mx.array(windows[i : i + batch])).loss.item()
        for i in range(0, n, batch)
    ]
    return float(np.mean(losses))


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        books = read_books(find_corpus(args.corpus, Path(tmp)))
        paras = [p for name in BOOKS for p in paragraphs(books[name])]
        held_out = paras[::50]  # every 50th paragraph, for an honest validation loss
        train_paras = [p for i, p in enumerate(paras) if i % 50]
        print(f"corpus: {len(paras)} paragraphs, {sum(map(len, paras)) / 1e6:.2f} M characters")
        if args.tokenizer:  # reuse a model's tokenizer, e.g. to train a draft for speculative decoding
            tok = LlamaTokenizer.from_pretrained(args.tokenizer)
            args.vocab_size = len(tok)
        else:
            sp_path = train_tokenizer(train_paras, args.vocab_size, Path(tmp) / "tokenizer")
            tok = LlamaTokenizer(str(sp_path), legacy=False, model_max_length=args.context)
        out.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out)
    stream, starts = token_stream(tok, train_paras)
    val_stream, _ = token_stream(tok, held_out)
    print(f"tokens: {len(stream)} train, {len(val_stream)} held out ({time.time() - t_start:.0f} s)")

    mx.random.seed(args.seed)
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    print(f"model: {n_params / 1e6:.2f} M parameters")
    model.train()

    warmup = max(1, args.steps // 20)
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(args.lr / warmup, args.lr, warmup),
            optim.cosine_decay(args.lr, args.steps - warmup, end=args.lr / 10),
        ],
        [warmup],
    )
    optimizer = optim.AdamW(learning_rate=schedule, betas=[0.9, 0.95], weight_decay=0.1)
    loss_and_grad = nn.value_and_grad(model, lambda m, x: m(x, labels=x).loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x: mx.array) -> mx.array:
        loss, grads = loss_and_grad(model, x)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(args.seed)
    data = batches(stream, starts, args.batch_size, args.context, rng)
    t_train, smooth = time.time(), None
    if stream.min() < 0 or stream.max() >= args.vocab_size:  # checked once here: the compiled step cannot
        raise SystemExit(f"token ids outside the vocabulary of {args.vocab_size}")  # read ids back to check
    for i in range(1, args.steps + 1):
        with trusted_ids():
            loss = step(next(data))
        mx.eval(loss, state)
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if i % args.log_every == 0 or i == args.steps:
            elapsed = time.time() - t_train
            speed = i * args.batch_size * args.context / elapsed
            print(
                f"step {i}/{args.steps}  loss {smooth:.3f}  lr {schedule(i).item():.2e}  {speed:.0f} tok/s  "
                f"eta {elapsed / i * (args.steps - i):.0f} s",
                flush=True,
            )
    train_time = time.time() - t_train

    model.eval()
    model.set_dtype(mx.float16)  # what ships (half the size); evaluate those weights, computing in float32
    model.set_dtype(mx.float32)  # (MLX's CPU float16 kernels are slow)
    val = evaluate(model, val_stream, args.context)
    model.set_dtype(mx.float16)
    model.save_pretrained(out)
    summary = {
        "corpus": "Jane Austen's six novels, Debian package r-cran-janeaustenr 1.0.0 (MIT; texts public domain)",
        "parameters": n_params,
        "train_tokens": int(len(stream)),
        "tokens_seen": args.steps * args.batch_size * args.context,
        "final_train_loss": round(smooth, 3),
        "held_out_loss": round(val, 3),
        "held_out_perplexity": round(math.exp(val), 1),
        "train_seconds": round(train_time),
        "total_seconds": round(time.time() - t_start),
        "command": " ".join(sys.argv[1:]),
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    model.set_dtype(mx.float32)
    for prompt in ("It is a truth universally acknowledged", "Mrs. Jennings was"):
        ids = model.generate(mx.array([tok.encode(prompt)]), max_new_tokens=40)
        print(repr(tok.decode(ids[0].tolist(), skip_special_tokens=True)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", help="r-cran-janeaustenr .deb, its unpacked tree, or an R library (default: search)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: the bundled demo)")
    p.add_argument("--tokenizer", help="a model directory whose tokenizer to reuse instead of training one")
    p.add_argument("--vocab-size", type=int, default=2000)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--intermediate-size", type=int, default=704)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=2.5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    return p.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
