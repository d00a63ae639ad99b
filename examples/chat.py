"""A multi-turn chat that keeps the KV cache between turns, so each turn only prefills its new tokens.

The demo model is a plain language model without a chat template: the tokenizer then renders the plain
"User: ...\\nAssistant:" format, and the answer is cut where the model starts the next "User:" line. Expect
Austen-flavoured nonsense from the demo; a chat checkpoint (e.g. a Llama 2 chat model) gets its own template.

    python examples/chat.py
    python examples/chat.py --model meta-llama/Llama-2-7b-chat-hf
"""

from __future__ import annotations

import argparse

import mlx_llama  # first: sets up the BLAS for MLX on Linux

DEMO = mlx_llama.DEMO_MODEL
QUESTIONS = ["Who is coming to dinner?", "And what did your sister say?"]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO), help="model directory or Hub id (default: the bundled demo)")
    p.add_argument("--max-tokens", type=int, default=25)
    args = p.parse_args()

    model, tokenizer = mlx_llama.load(args.model)
    stop = [] if tokenizer.has_chat_template else ["\nUser:"]
    messages = [{"role": "system", "content": "You are a polite lady in a country house."}]
    cache, cached = model.make_cache(), []  # `cached`: the ids whose keys/values the cache holds
    for question in QUESTIONS:
        messages.append({"role": "user", "content": question})
        ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        # Re-rendering the conversation can tokenize the last answer differently from the sampled ids:
        # keep only the shared prefix in the cache and feed the rest.
        keep = min(common_prefix(cached, ids), len(ids) - 1)
        for layer in cache:
            layer.trim(len(cached) - keep)
        print(f"User: {question}\nAssistant: ", end="", flush=True)
        answer, new_ids = [], []
        for r in mlx_llama.stream_generate(
            model, tokenizer, ids[keep:], args.max_tokens, cache=cache, stop=stop, temperature=0.7, seed=0
        ):
            print(r.text, end="", flush=True)
            answer.append(r.text)
            new_ids.append(r.token)
        print(f"\n  [fed {len(ids) - keep} new prompt tokens, reused {keep} from the cache]")
        cached = (ids + new_ids)[: cache[0].offset]
        messages.append({"role": "assistant", "content": "".join(answer).strip()})


if __name__ == "__main__":
    main()
