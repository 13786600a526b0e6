"""Measuring datasets rather than making them: the false-negative probe (``fn_probe``), fine-tune and
score a retriever on a BEIR split (``train_eval``), compare training sets over seeds (``compare``), and
sentence-transformers' miner on synth's embeddings for like-for-like comparisons (``st_cache``).

A new measurement is one module here with a CLI command in ``synth.cli``; it writes its results
through ``synth.core.files``.
"""
