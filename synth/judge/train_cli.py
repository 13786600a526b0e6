"""``synth train-judge``: train a cross-encoder judge on a BEIR folder's labelled positives (offline).

The typer command in ``synth/cli.py`` only parses options and calls ``train_judge_command``.
"""

from __future__ import annotations

from pathlib import Path

from synth.core import outdir
from synth.core.errors import UserError


def train_judge_command(
    source: Path,
    out: Path,
    epochs: int = 1,
    max_pairs: int | None = None,
    seed: int = 0,
    split: str = "train",
    negatives_per_positive: int = 3,
    batch_size: int = 32,
    max_length: int = 256,
) -> dict:
    """Load ``source`` (a BEIR folder, qrels/<split>.tsv), train, save to ``out``; return the stats
    (also in ``out/synth_judge.json``)."""
    from synth.judge.train import train_cross_encoder
    from synth.sources import load_source
    from synth.formats.beir import BeirSource

    source = Path(source).resolve()
    if not source.is_dir():
        raise UserError(f"{source}: not a folder (expected a BEIR folder)")
    if not (source / "qrels" / f"{split}.tsv").is_file():
        raise UserError(f"{source}: no qrels/{split}.tsv (pick the split with --split)")
    if epochs < 1:
        raise UserError("--epochs must be >= 1")
    if max_pairs is not None and max_pairs < 2:
        raise UserError("--max-pairs must be >= 2")
    out = Path(out).resolve()
    outdir.check_replaceable(out)  # a foreign --out fails before the training, not after
    data = load_source(BeirSource(path=str(source), split=split))
    tmp = outdir.prepare(out, "train-judge")
    try:
        stats = train_cross_encoder(
            data,
            tmp,
            epochs=epochs,
            max_pairs=max_pairs,
            seed=seed,
            negatives_per_positive=negatives_per_positive,
            batch_size=batch_size,
            max_length=max_length,
            source_label=f"beir:{source}:{split}",
        )
        outdir.publish(tmp, out, "train-judge")  # marks the folder again: the trainer replaced it whole
    except BaseException:
        outdir.discard(tmp)
        raise
    return stats
