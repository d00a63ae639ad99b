"""Shared builders for the tests (one place each), imported as `support.<module>`.

- compare: `to_np`, `rel_err` (how every numerical check measures a difference).
- hf_llama: tiny random Transformers Llamas, the numerical oracle (`tiny_llama` and its presets).
- spm: SentencePiece models trained in the test process (`train_spm`, `write_llama_tokenizer`).
- checkpoints: a Transformers-layout directory with a tokenizer (`write_checkpoint`).
- meta: original Meta `consolidated.NN.pth` checkpoints written independently of mlx_llama (`write_meta`).
- tokenizer_corpus: the tokenizer parity corpus and the LLaMA-style tiny model (`tiny_model_path`).
- batches: left-padded prompt batches (`left_padded`).
- hostile_files: malformed checkpoint files written byte by byte.
- lora: tiny PEFT-wrapped models (the LoRA oracle).
- server: a `mlx-llama serve` subprocess on a free 127.0.0.1 port (`ServerProcess`).
- parallel_worker, ranks: the distributed tests' rank programs and launcher.

Session fixtures built from these live in tests/conftest.py.
"""
