"""The `mlx-llama` command, run as a subprocess, checked against Transformers' greedy generate + sentencepiece."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import mlx_llama.cli as cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "mlx_llama" / "assets" / "demo"
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory):
    """A tiny Transformers checkpoint converted by our converter (float32, so Transformers is an exact oracle)."""
    from mlx_llama.convert import convert

    src, hf = tiny_checkpoint
    out = convert(src, tmp_path_factory.mktemp("conv") / "tiny", dtype="float32", quiet=True)
    from mlx_llama.tokenizer import LlamaTokenizer

    return out, hf, LlamaTokenizer.from_pretrained(out)


def run_cli(*args, stdin=None, module=False):
    command = [sys.executable, "-m", "mlx_llama"] if module else [sys.executable, "-c", CONSOLE_SCRIPT]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command + list(args), input=stdin, capture_output=True, text=True, env=env, timeout=120)


# What the installed `mlx-llama` script does: call cli.main and exit with its status.
CONSOLE_SCRIPT = "import sys; from mlx_llama.cli import main; sys.exit(main())"


def greedy(hf, ids, n=MAX_TOKENS):
    """Transformers' greedy continuation, cut after eos (id 2) as the CLI stops there."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = torch.tensor([ids])  # an explicit mask: unk (0) in a prompt must not pass for padding
        out = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, eos_token_id=2, pad_token_id=0
        )
    return out[0, ids.shape[1] :].tolist()


def text_of(tokenizer, new_ids):
    return tokenizer.sp_model.decode([i for i in new_ids if i != 2])


@pytest.mark.subprocess
@pytest.mark.slow
def test_generate_on_converted_model(converted):
    path, hf, tok = converted
    prompt = "The cat sat on"
    result = run_cli("generate", "--model", str(path), "--prompt", prompt, "--max-tokens", str(MAX_TOKENS))
    assert result.returncode == 0, result.stderr
    assert result.stdout == text_of(tok, greedy(hf, tok.encode(prompt))) + "\n"
    assert "tokens/s" in result.stderr and "Peak memory" in result.stderr


@pytest.mark.subprocess
def test_generate_reads_prompt_from_stdin(converted):
    path, hf, tok = converted
    prompt = "A small boat"
    args = ("generate", "--model", str(path), "--prompt", "-", "--max-tokens", str(MAX_TOKENS), "--quiet")
    result = run_cli(*args, stdin=prompt, module=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == text_of(tok, greedy(hf, tok.encode(prompt))) + "\n"
    assert result.stderr == ""


@pytest.mark.subprocess
@pytest.mark.slow
def test_chat_keeps_the_conversation_for_two_turns(converted):
    path, hf, tok = converted
    first, second = "The dog ran", "and the birds sang"
    result = run_cli("chat", "--model", str(path), "--max-tokens", "6", stdin=f"{first}\n{second}\n")
    assert result.returncode == 0, result.stderr
    # No chat template: the tokenizer's plain "User: ...\nAssistant:" format, re-rendered each turn.
    ids1 = tok.apply_chat_template([{"role": "user", "content": first}], add_generation_prompt=True)
    answer1 = greedy(hf, ids1, 6)
    turns = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": text_of(tok, answer1).strip()},
        {"role": "user", "content": second},
    ]
    answer2 = greedy(hf, tok.apply_chat_template(turns, add_generation_prompt=True), 6)
    assert result.stdout == f"{text_of(tok, answer1)}\n{text_of(tok, answer2)}\n"
    assert result.stderr.count("tokens/s") == 4  # prompt and generation speed, per turn


@pytest.mark.subprocess
def test_bad_model_and_bad_arguments_exit_2_with_one_line():
    result = run_cli("generate", "--model", "/no/such/model/dir", "--prompt", "hi")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "/no/such/model/dir" in lines[0]
    result = run_cli("generate", "--prompt", "hi", "--max-tokens", "many")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--max-tokens" in result.stderr


@pytest.mark.subprocess
@pytest.mark.skipif(not (DEMO / "config.json").is_file(), reason="the bundled demo model is not built yet")
def test_generate_with_the_bundled_demo_model():
    result = run_cli("generate", "--prompt", "Once upon a time", "--max-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) > 0
    assert "demo model" in result.stderr and "--model" in result.stderr


# ---- in-process: argument checks and the chat session's cache reuse ------------------------------------------


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["generate", "--prompt", "x", "--max-tokens", "0"], "--max-tokens"),
        (["generate", "--prompt", "x", "--temp", "-1"], "--temp"),
        (["generate", "--prompt", "   "], "empty"),
    ],
)
def test_invalid_values_are_one_line_errors(args, fragment, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


class TemplateTokenizer:
    """A tokenizer with a chat format: wraps ours and renders a tiny template of its own."""

    def __init__(self, tok):
        self.tok = tok
        self.eos_token_id = tok.eos_token_id
        self.has_chat_template = True

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        text = "".join(f"{m['role']}: {m['content']}. " for m in messages) + "assistant:"
        return self.tok.encode(text)

    def encode(self, text, add_special_tokens=True):
        return self.tok.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)

    def detokenizer(self):
        return self.tok.detokenizer()


def test_chat_session_reuses_the_cache(converted, capsys):
    from mlx_llama.loading import load_model

    path, hf, tok = converted
    model = load_model(path)
    args = cli.build_parser().parse_args(["chat", "--max-tokens", "5", "--quiet"])
    session = cli.ChatSession(model, TemplateTokenizer(tok), system="be brief")
    session.turn("the cat", args)
    cached_after_first = session.cache[0].offset
    full, start = session.prepare("a dog")
    # The re-rendered conversation shares its prefix with the cache: only the new part is prefilled.
    assert 0 < start <= cached_after_first and start == len(session.cached)
    assert len(full) - start < len(full) // 2
    session.turn("a dog", args)
    out = capsys.readouterr().out.splitlines()
    ids = TemplateTokenizer(tok).apply_chat_template(session.messages[:-1])
    assert out[1] == text_of(tok, greedy(hf, ids, 5))
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
