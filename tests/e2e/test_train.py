"""The produced dataset trains as loaded: a few SentenceTransformerTrainer steps with MNRL on CPU."""

from __future__ import annotations

import numpy as np
import torch
from datasets import load_from_disk
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.losses import MultipleNegativesRankingLoss

from synth.embed import BUNDLED_MODEL, resolve_model_path
from tests.conftest import REPO


def test_mnrl_steps_on_produced_dataset(synth_cli, tmp_path):
    out = tmp_path / "run"
    synth_cli("run", str(REPO / "recipes" / "resa2.yaml"), "--out", str(out), "--set", "mine.n_negatives=2", check=True)
    dataset = load_from_disk(str(out / "dataset"))["triplets"]  # no column dropped: provenance is elsewhere
    assert dataset.column_names == ["anchor", "positive", "negative_1", "negative_2"]

    model = SentenceTransformer(resolve_model_path(BUNDLED_MODEL), device="cpu")
    model.max_seq_length = 64
    before = next(model.parameters()).detach().clone()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "ckpt"),
        max_steps=3,
        per_device_train_batch_size=8,
        learning_rate=5e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model)
    )
    result = trainer.train()
    assert result.global_step == 3
    assert np.isfinite(result.training_loss) and result.training_loss > 0
    assert not torch.equal(before, next(model.parameters()).detach())
