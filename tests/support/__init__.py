"""Shared builders for the tests (one place each), imported as `support.<module>`.

- compare: `to_np`, `rel_err` (how every numerical check measures a difference).
- hf_llama: tiny random Transformers Llamas, the numerical oracle (`tiny_llama` and its presets).
- spm: SentencePiece models trained in the test process (`train_spm`, `write_llama_tokenizer`).
- checkpoints: a Transformers-layout directory with a tokenizer (`write_checkpoint`).
- meta: original Meta `consolidated.NN.pth` checkpoints written independently of mlx_llama (`write_meta`).
- tokenizer_corpus: the tokenizer parity corpus and the LLaMA-style tiny model (`tiny_model_path`).

Session fixtures built from these live in tests/conftest.py.
"""
