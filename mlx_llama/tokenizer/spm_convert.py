"""`LlamaTokenizerFast(from_slow=True)`: build a `tokenizers` BPE tokenizer from a SentencePiece tokenizer.model.

The pieces become the BPE vocabulary (ids unchanged); the merges are every split of a piece into two pieces,
best-scored piece first; control pieces (<s>, </s>) become special added tokens. Normalisation follows the
`legacy` flag as in Transformers: legacy prepends "▁" and replaces spaces in the normalizer; legacy=False uses
a Metaspace pre-tokenizer that adds the "▁" only at the start of the text. (User-defined pieces, which the
LLaMA family does not use, are not recognised: reading them would need the protobuf schema.)
"""

from __future__ import annotations

from ..errors import TokenizerError

SPIECE_UNDERLINE = "\u2581"


def _merges(pieces: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """(left, right) for every way to write a piece as two pieces, ordered by the merged piece's score (best
    first), then by the longer left part, then by the parts' ids."""
    ids = {p: i for i, p in enumerate(pieces)}
    found = []
    for piece, score in zip(pieces, scores, strict=True):
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids]
        splits.sort(key=lambda lr: (ids[lr[0]], ids[lr[1]]))
        found += [(score, len(left), len(right), left, right) for left, right in splits]
    order = sorted(range(len(found)), key=lambda i: (-found[i][0], -found[i][1], -found[i][2], i))
    return [(found[i][3], found[i][4]) for i in order]


def _load(vocab_file: str):
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    try:
        processor.Load(vocab_file)
    except (OSError, RuntimeError) as exc:
        raise TokenizerError(f"{vocab_file}: not a valid SentencePiece model ({exc})") from None
    return processor


def sentencepiece_to_tokenizers(vocab_file: str, legacy: bool = True, add_prefix_space: bool | None = None):
    """A `tokenizers.Tokenizer` equal to Transformers' conversion of this LLaMA tokenizer.model."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    sp = _load(vocab_file)
    prefix = bool(add_prefix_space)  # Transformers' conversion: None (not given) adds no prefix "▁"
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    scores = [0.0 if i < 3 else sp.get_score(i) for i in range(len(pieces))]
    unk = pieces[sp.unk_id()] if sp.unk_id() >= 0 else None
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(BPE(vocab, _merges(pieces, scores), unk_token=unk, fuse_unk=True, byte_fallback=True))
    control = [p for i, p in enumerate(pieces) if sp.is_control(i)]
    tok.add_tokens([AddedToken(p, normalized=False, special=True) for p in control])
    if legacy:
        steps = [normalizers.Prepend(SPIECE_UNDERLINE)] if prefix else []
        tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", SPIECE_UNDERLINE)])
    else:
        scheme = "first" if prefix else "never"
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme=scheme, split=False)
    steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1)] if prefix else []))
    return tok
