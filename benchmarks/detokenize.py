"""Streaming detokenizer cost per token, against re-decoding the growing sequence (what a naive stream does).

    PYTHONPATH=. python3 benchmarks/detokenize.py

Tokenizers: the SentencePiece LlamaTokenizer and the fast LlamaTokenizerFast (mistral-common's 32000-piece model,
converted by our from_slow), and Meta's Llama 3 tiktoken file as our tokenizer.json (byte-level BPE). Needs the
test extra (mistral-common, llama-models). Prints microseconds per token for streams of 500 and 2000 tokens.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings

import mistral_common

import mlx_llama  # noqa: F401  (BLAS set-up before MLX)
from mlx_llama.tokenizer import AutoTokenizer, LlamaTokenizer, LlamaTokenizerFast

TEXT = ("The quick brown fox jumps over the lazy dog. Zürich, 東京 and 😀 emoji; code: def f(x): return x * 2\n") * 200


def per_token_us(run, ids: list[int]) -> float:
    start = time.perf_counter()
    run(ids)
    return (time.perf_counter() - start) / len(ids) * 1e6


def stream(tok):
    def run(ids):
        detok = tok.detokenizer()
        for i in ids:
            detok.add_token(i)
        detok.finalize()

    return run


def redecode(tok):
    def run(ids):
        for n in range(1, len(ids) + 1):
            tok.decode(ids[:n], skip_special_tokens=True)

    return run


def main() -> None:
    warnings.simplefilter("ignore")
    spm = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    import llama_models

    from mlx_llama.checkpoint.tiktoken_bpe import write_tokenizer

    llama3_dir = tempfile.mkdtemp()
    write_tokenizer(os.path.join(os.path.dirname(llama_models.__file__), "llama3", "tokenizer.model"),
                    __import__("pathlib").Path(llama3_dir), "3.1", 131072, False)  # fmt: skip
    tokenizers = {
        "LlamaTokenizer (SentencePiece)": LlamaTokenizer(spm, legacy=True),
        "LlamaTokenizerFast (from_slow)": LlamaTokenizerFast(vocab_file=spm, from_slow=True, legacy=True),
        "Llama 3 byte-level BPE": AutoTokenizer.from_pretrained(llama3_dir),
    }
    print("| tokenizer | stream, 500 tokens | stream, 2000 tokens | re-decode, 500 | re-decode, 2000 |")
    print("|---|---|---|---|---|")
    for name, tok in tokenizers.items():
        ids = tok.encode(TEXT, add_special_tokens=False)
        tok.detokenizer()  # build the per-tokenizer table once, as a server does at load
        cells = [per_token_us(stream(tok), ids[:n]) for n in (500, 2000)]
        cells += [per_token_us(redecode(tok), ids[:n]) for n in (500, 2000)]
        print(f"| {name} | " + " | ".join(f"{c:.1f} µs" for c in cells) + " |")


if __name__ == "__main__":
    main()
